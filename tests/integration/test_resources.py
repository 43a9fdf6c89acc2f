"""``init_gcp`` / ``miraikakaku init-gcp`` against the real Pub/Sub and Bigtable emulators.

Runs it twice on a uuid-named project: the first run creates everything, the second reports
everything as existing and changes nothing; then checks the topics, the ordered prices
subscription (without a dead-letter policy on the emulator), the tables, the column families and
their GC-by-versions rules; that a missing column family is added to an existing table; and the
command-line entry point. Run: ``pytest tests/integration/test_resources.py``.
"""

from __future__ import annotations

import argparse
import uuid

import pytest
from google.cloud import bigtable, pubsub_v1
from google.cloud.bigtable import column_family

from miraikakaku.resources import (
    DEFAULT_SUBSCRIPTIONS,
    DEFAULT_TOPICS,
    add_init_gcp_parser,
    init_gcp,
    run_init_gcp,
)
from stores.bigtable import TABLES

pytestmark = pytest.mark.integration


@pytest.fixture
def emulators(pubsub_emulator, bigtable_emulator):
    return pubsub_emulator, bigtable_emulator


def _project() -> str:
    return f"mk-it-{uuid.uuid4().hex[:10]}"


def test_init_gcp_twice_creates_then_reports_existing(emulators):
    project = _project()
    first = init_gcp(project, instance="miraikakaku", dataset="miraikakaku", emulator=True)
    second = init_gcp(project, instance="miraikakaku", dataset="miraikakaku", emulator=True)

    created = [line for line in first if line.startswith("created ")]
    assert len(created) == len(DEFAULT_TOPICS) + len(DEFAULT_SUBSCRIPTIONS) + len(TABLES) + sum(
        len(families) for families in TABLES.values())
    assert all(line.split()[0] in {"created", "skipped"} for line in first)
    assert all(line.split()[0] in {"exists", "skipped"} for line in second), second
    assert [line.split()[1:3] for line in first] == [line.split()[1:3] for line in second]
    assert any(line.startswith("skipped bigquery-dataset") for line in second)
    assert any(line.startswith("skipped bigtable-instance") for line in second)

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    try:
        topics = {t.name for t in publisher.list_topics(request={"project": f"projects/{project}"})}
        assert topics == {publisher.topic_path(project, t) for t in DEFAULT_TOPICS}
        for spec in DEFAULT_SUBSCRIPTIONS:
            sub = subscriber.get_subscription(
                request={"subscription": subscriber.subscription_path(project, spec.name)})
            assert sub.topic == publisher.topic_path(project, spec.topic)
            assert sub.enable_message_ordering == spec.ordered
            assert not sub.dead_letter_policy.dead_letter_topic  # the emulator cannot do it
        prices = next(s for s in DEFAULT_SUBSCRIPTIONS if s.topic == "prices")
        assert prices.ordered and prices.dead_letter_topic == "prices-undeliverable"
        assert any("no dead-letter policy" in line and prices.name in line for line in first)
    finally:
        subscriber.close()
        publisher.transport.close()

    client = bigtable.Client(project=project, admin=True)
    try:
        instance = client.instance("miraikakaku")
        assert {t.table_id for t in instance.list_tables()} == set(TABLES)
        for table_id, families in TABLES.items():
            existing = instance.table(table_id).list_column_families()
            assert set(existing) == set(families)
            for name, spec in families.items():
                assert existing[name].gc_rule == column_family.MaxVersionsGCRule(spec.versions)
                assert spec.versions == 1  # GC by versions only, never by age
    finally:
        client.close()


def test_a_missing_family_is_added_to_an_existing_table(bigtable_emulator):
    project, instance = _project(), "partial"
    client = bigtable.Client(project=project, admin=True)
    try:
        client.instance(instance).table("prices").create(
            column_families={"bar": column_family.MaxVersionsGCRule(3)})
        lines = init_gcp(project, instance=instance, topics=(), subscriptions=(), emulator=True)
        assert "exists bigtable-table prices" in lines
        assert any(line.startswith("exists bigtable-family prices/bar (GC rule differs")
                   for line in lines)  # reported, left as is
        assert any(line.startswith("created bigtable-family prices/quote") for line in lines)
        families = client.instance(instance).table("prices").list_column_families()
        assert set(families) == set(TABLES["prices"])
        assert families["bar"].gc_rule == column_family.MaxVersionsGCRule(3)
    finally:
        client.close()


def test_environment_mismatch_is_refused(bigtable_emulator, monkeypatch):
    with pytest.raises(ValueError, match="unset it to target a real project"):
        init_gcp("p", instance="i", topics=(), subscriptions=(), emulator=False)
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    with pytest.raises(ValueError, match="PUBSUB_EMULATOR_HOST"):
        init_gcp("p", instance="i", emulator=True)


def test_command_line_entry_point(emulators, monkeypatch, capsys):
    project = _project()
    monkeypatch.setenv("MIRAIKAKAKU_GCP_PROJECT", project)
    parser = argparse.ArgumentParser(prog="miraikakaku")
    add_init_gcp_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["init-gcp", "--instance", "cli"])
    assert (args.project, args.dataset, args.emulator) == (project, "miraikakaku", None)
    assert run_init_gcp(args) == 0
    out = capsys.readouterr().out
    assert f"project {project} (emulators)" in out
    assert "created bigtable-table prices" in out
    assert run_init_gcp(args) == 0
    again = capsys.readouterr().out.splitlines()[1:]
    assert again and all(line.split()[0] in {"exists", "skipped"} for line in again)
