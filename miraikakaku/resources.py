"""``miraikakaku init-gcp``: create the Pub/Sub, Bigtable and BigQuery resources, idempotently.

Creates the topics and subscriptions, the Bigtable instance (real project only), the tables and
column families of ``stores.bigtable.TABLES`` (GC by versions) and the BigQuery dataset and
tables of ``stores.bigquery.TABLE_SPECS``. Existing resources are left as they are and reported
as ``exists`` (a differing GC rule is reported, not changed), so running it twice is fine. Every
report line reads ``{created|exists|skipped|warning} {kind} {name}[ ({note})]``.

Against the emulators (``PUBSUB_EMULATOR_HOST`` and ``BIGTABLE_EMULATOR_HOST`` set; ``python -m
tests.emulators`` prints the exports)::

    miraikakaku init-gcp            # --emulator is detected from the *_EMULATOR_HOST variables

Differences on the emulators: the Bigtable emulator has no instance admin (any instance id
works; tables are created directly); there is no BigQuery emulator (skipped, logged); the
Pub/Sub emulator (0.8.20) supports message ordering but not dead-letter policies — it accepts
the policy, yet once a message reaches ``max_delivery_attempts`` every pull on the subscription
fails with "Application error processing RPC" and nothing reaches the dead-letter topic — so on
the emulator the prices subscription is created ordered but without a dead-letter policy. On a
real project the policy is set and the Pub/Sub service agent is granted publisher on the
dead-letter topic and subscriber on the subscription (Pub/Sub needs both to forward). Note that
Dataflow acknowledges messages once it has them, so the policy catches messages no pipeline
ever takes, not parse failures: those are the pipeline's own dead letters, published to the
same ``prices-dead-letter`` topic with ``step``/``reason`` attributes (messages Pub/Sub forwards
carry ``CloudPubSubDeadLetterSource*`` attributes instead).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

__all__ = [
    "SubscriptionSpec",
    "DEFAULT_TOPICS",
    "DEFAULT_SUBSCRIPTIONS",
    "NOTIFY_SUBSCRIPTIONS",
    "init_gcp",
    "add_init_gcp_parser",
    "run_init_gcp",
    "emulator_detected",
    "ensure_bigquery",
]

_LOG = logging.getLogger(__name__)
_EMULATOR_VARS = ("PUBSUB_EMULATOR_HOST", "BIGTABLE_EMULATOR_HOST")


@dataclasses.dataclass(frozen=True)
class SubscriptionSpec:
    """A Pub/Sub subscription to create.

    Attributes:
        name: subscription id.
        topic: topic id it reads.
        ordered: deliver messages with the same ordering key in publish order.
        dead_letter_topic: topic id for messages that exceed ``max_delivery_attempts``
            (real projects only; see the module docstring).
        max_delivery_attempts: delivery attempts before dead-lettering (5-100).
        ack_deadline_seconds: ack deadline.
    """

    name: str
    topic: str
    ordered: bool = False
    dead_letter_topic: str | None = None
    max_delivery_attempts: int = 10
    ack_deadline_seconds: int = 60


DEFAULT_TOPICS = ("prices", "alerts", "prices-dead-letter", "prices-undeliverable",
                  "prices-validated", "predictions")
"""Price events in, alert events out, the pipeline's dead letters (with step and reason, for
``miraikakaku deadletters``), and messages Pub/Sub itself gave up delivering (its dead-letter
policy forwards the raw message, which is a different shape, so it gets its own topic). For the
notifier, the pipeline also publishes the validated price events it stores
(``--prices_topic .../prices-validated``) and its predictions (``--predictions_topic
.../predictions``) in ``notifier.events``' wire format."""

DEFAULT_SUBSCRIPTIONS = (
    SubscriptionSpec("prices-streaming", "prices", ordered=True,
                     dead_letter_topic="prices-undeliverable"),
    SubscriptionSpec("alerts-notifier", "alerts"),
    SubscriptionSpec("prices-dead-letter-inspect", "prices-dead-letter"),
    SubscriptionSpec("prices-notify", "prices-validated"),
    SubscriptionSpec("predictions-notify", "predictions"),
    SubscriptionSpec("alerts-notify", "alerts"),
)
"""The streaming pipeline reads ``prices-streaming``; the notifier ``alerts-notifier``;
``miraikakaku deadletters`` ``prices-dead-letter-inspect`` (created up front, since Pub/Sub only
keeps messages for subscriptions that exist when they are published). The notification service
(``notifier.pubsub_source.PubSubSource``) reads ``prices-notify``, ``predictions-notify`` and
``alerts-notify`` (``NOTIFY_SUBSCRIPTIONS``)."""

NOTIFY_SUBSCRIPTIONS = ("prices-notify", "predictions-notify", "alerts-notify")
"""The subscriptions ``miraikakaku notify`` reads in Google Cloud mode."""


def emulator_detected() -> bool:
    """True when ``PUBSUB_EMULATOR_HOST`` or ``BIGTABLE_EMULATOR_HOST`` is set."""
    return any(os.environ.get(v) for v in _EMULATOR_VARS)


def _line(lines: list[str], status: str, kind: str, name: str, note: str = "") -> None:
    text = f"{status} {kind} {name}" + (f" ({note})" if note else "")
    (_LOG.warning if status == "warning" else _LOG.info)(text)
    lines.append(text)


def _check_environment(emulator: bool, need_pubsub: bool) -> None:
    needed = [v for v in _EMULATOR_VARS if v != "PUBSUB_EMULATOR_HOST" or need_pubsub]
    if emulator:
        missing = [v for v in needed if not os.environ.get(v)]
        if missing:
            raise ValueError(f"emulator mode needs {', '.join(missing)} "
                             "(start the emulators: python -m tests.emulators)")
    else:
        present = [v for v in _EMULATOR_VARS if os.environ.get(v)]
        if present:
            raise ValueError(f"{', '.join(present)} set: the clients would talk to the emulator; "
                             "unset it to target a real project, or pass --emulator")


# -- Pub/Sub -------------------------------------------------------------------------------
def _ensure_topics(project: str, topics: Sequence[str], lines: list[str], publisher) -> None:
    from google.api_core import exceptions

    for topic in topics:
        path = publisher.topic_path(project, topic)
        try:
            publisher.create_topic(request={"name": path})
            _line(lines, "created", "topic", path)
        except exceptions.AlreadyExists:
            _line(lines, "exists", "topic", path)


def _ensure_subscriptions(project: str, subscriptions: Sequence[SubscriptionSpec],
                          emulator: bool, lines: list[str], publisher, subscriber) -> None:
    from google.api_core import exceptions

    for spec in subscriptions:
        path = subscriber.subscription_path(project, spec.name)
        request: dict = {"name": path, "topic": publisher.topic_path(project, spec.topic),
                         "ack_deadline_seconds": spec.ack_deadline_seconds,
                         "enable_message_ordering": spec.ordered}
        notes = ["ordered"] if spec.ordered else []
        if not emulator:
            request["expiration_policy"] = {}  # no ttl: never expires for inactivity
        if spec.dead_letter_topic and not emulator:
            request["dead_letter_policy"] = {
                "dead_letter_topic": publisher.topic_path(project, spec.dead_letter_topic),
                "max_delivery_attempts": spec.max_delivery_attempts}
            notes.append(f"dead letters to {spec.dead_letter_topic}")
        elif spec.dead_letter_topic:
            notes.append("no dead-letter policy: the emulator does not support it")
        note = ", ".join(notes)
        try:
            subscriber.create_subscription(request=request)
            _line(lines, "created", "subscription", path, note)
        except exceptions.AlreadyExists:
            _line(lines, "exists", "subscription", path)
            continue
        if spec.dead_letter_topic and not emulator:
            _grant_dead_letter_roles(project, spec, lines, publisher, subscriber)


def _grant_dead_letter_roles(project: str, spec: SubscriptionSpec, lines: list[str],
                             publisher, subscriber) -> None:
    """Let the Pub/Sub service agent forward to the dead-letter topic (real projects)."""
    from google.api_core import exceptions

    try:
        from google.cloud import resourcemanager_v3

        number = resourcemanager_v3.ProjectsClient().get_project(
            name=f"projects/{project}").name.split("/")[-1]
        agent = f"serviceAccount:service-{number}@gcp-sa-pubsub.iam.gserviceaccount.com"
        for client, resource, role in (
                (publisher, publisher.topic_path(project, spec.dead_letter_topic),
                 "roles/pubsub.publisher"),
                (subscriber, subscriber.subscription_path(project, spec.name),
                 "roles/pubsub.subscriber")):
            policy = client.get_iam_policy(request={"resource": resource})
            binding = next((b for b in policy.bindings if b.role == role), None)
            if binding is None:
                binding = policy.bindings.add(role=role)
            if agent not in binding.members:
                binding.members.append(agent)
                client.set_iam_policy(request={"resource": resource, "policy": policy})
            _line(lines, "created", "iam-binding", f"{resource} {role}", agent)
    except (exceptions.GoogleAPICallError, ImportError) as e:
        _line(lines, "warning", "iam-binding", spec.name,
              f"grant the Pub/Sub service agent publisher on {spec.dead_letter_topic} and "
              f"subscriber on {spec.name} by hand: {e}")


# -- Bigtable ------------------------------------------------------------------------------
def _ensure_bigtable_instance(client, instance_id: str, zone: str, nodes: int,
                              lines: list[str]):
    from google.cloud.bigtable import enums

    instance = client.instance(instance_id, display_name=instance_id,
                               instance_type=enums.Instance.Type.PRODUCTION,
                               labels={"app": "miraikakaku"})
    if instance.exists():
        _line(lines, "exists", "bigtable-instance", instance_id)
        return instance
    cluster = instance.cluster(f"{instance_id}-c1"[:30], location_id=zone, serve_nodes=nodes,
                               default_storage_type=enums.StorageType.SSD)
    instance.create(clusters=[cluster]).result(timeout=600)
    _line(lines, "created", "bigtable-instance", instance_id, f"{zone}, {nodes} node(s)")
    return instance


def _ensure_bigtable_tables(instance, lines: list[str]) -> None:
    from google.api_core import exceptions

    from stores.bigtable import TABLES

    for table_id, families in TABLES.items():
        table = instance.table(table_id)
        try:
            table.create(column_families={f: spec.to_gc_rule() for f, spec in families.items()})
            _line(lines, "created", "bigtable-table", table_id)
            for family, spec in families.items():
                _line(lines, "created", "bigtable-family", f"{table_id}/{family}",
                      f"max {spec.versions} version(s)")
            continue
        except exceptions.AlreadyExists:
            _line(lines, "exists", "bigtable-table", table_id)
        existing = table.list_column_families()
        for family, spec in families.items():
            rule = spec.to_gc_rule()
            if family not in existing:
                table.column_family(family, rule).create()
                _line(lines, "created", "bigtable-family", f"{table_id}/{family}",
                      f"max {spec.versions} version(s)")
            elif existing[family].gc_rule != rule:
                have = existing[family].gc_rule
                _line(lines, "exists", "bigtable-family", f"{table_id}/{family}",
                      f"GC rule differs: have {have.to_pb() if have else None}, want max "
                      f"{spec.versions} version(s); left as is")
            else:
                _line(lines, "exists", "bigtable-family", f"{table_id}/{family}")


# -- BigQuery ------------------------------------------------------------------------------
def ensure_bigquery(client, project: str, dataset: str, location: str, lines: list[str]) -> None:
    """Create the dataset and the tables of ``stores.bigquery.TABLE_SPECS`` unless they exist.

    Args:
        client: a ``google.cloud.bigquery.Client`` (or an object with ``create_dataset`` and
            ``create_table`` that raise ``google.api_core.exceptions.Conflict`` on existing).
        project, dataset, location: where.
        lines: report lines are appended here.
    """
    from google.api_core import exceptions
    from google.cloud import bigquery

    from stores.bigquery import TABLE_SPECS, to_bq_table

    ds = bigquery.Dataset(f"{project}.{dataset}")
    ds.location = location
    try:
        client.create_dataset(ds)
        _line(lines, "created", "bigquery-dataset", f"{project}.{dataset}", location)
    except exceptions.Conflict:
        _line(lines, "exists", "bigquery-dataset", f"{project}.{dataset}")
    for spec in TABLE_SPECS.values():
        name = f"{project}.{dataset}.{spec.name}"
        try:
            client.create_table(to_bq_table(spec, project, dataset))
            _line(lines, "created", "bigquery-table", name,
                  f"partitioned by {spec.partition_field}, clustered by "
                  f"{', '.join(spec.clustering_fields)}")
        except exceptions.Conflict:
            _line(lines, "exists", "bigquery-table", name)


# -- entry points --------------------------------------------------------------------------
def init_gcp(project: str, *, instance: str, dataset: str | None = None,
             topics: Sequence[str] = DEFAULT_TOPICS,
             subscriptions: Sequence[SubscriptionSpec] = DEFAULT_SUBSCRIPTIONS,
             emulator: bool, location: str = "US", bigtable_zone: str = "us-central1-b",
             bigtable_nodes: int = 1) -> list[str]:
    """Create the platform's resources unless they exist; see the module docstring.

    Args:
        project: Google Cloud project id (any id on the emulators).
        instance: Bigtable instance id.
        dataset: BigQuery dataset id; None skips BigQuery.
        topics: Pub/Sub topic ids.
        subscriptions: Pub/Sub subscriptions.
        emulator: target the emulators (the ``*_EMULATOR_HOST`` variables must be set).
        location: BigQuery dataset location.
        bigtable_zone, bigtable_nodes: cluster of a new Bigtable instance (real project).

    Returns:
        Report lines ``{created|exists|skipped|warning} {kind} {name}[ ({note})]``.

    Raises:
        ValueError: emulator mode without the emulator variables, or real mode with them set.
        google.api_core.exceptions.GoogleAPICallError: a call failed (permissions, quota).
    """
    from google.cloud import bigtable, pubsub_v1

    _check_environment(emulator, bool(topics or subscriptions))
    lines: list[str] = []
    if topics or subscriptions:
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        try:
            _ensure_topics(project, topics, lines, publisher)
            _ensure_subscriptions(project, subscriptions, emulator, lines, publisher, subscriber)
        finally:
            subscriber.close()
            publisher.transport.close()
    client = bigtable.Client(project=project, admin=True)
    try:
        if emulator:
            bt_instance = client.instance(instance)
            _line(lines, "skipped", "bigtable-instance", instance,
                  "the emulator needs none: tables are created directly")
        else:
            bt_instance = _ensure_bigtable_instance(client, instance, bigtable_zone,
                                                    bigtable_nodes, lines)
        _ensure_bigtable_tables(bt_instance, lines)
    finally:
        client.close()
    if dataset is None:
        _line(lines, "skipped", "bigquery-dataset", "-", "no dataset given")
    elif emulator:
        _line(lines, "skipped", "bigquery-dataset", f"{project}.{dataset}",
              "no BigQuery emulator: create it on a real project")
    else:
        from google.cloud import bigquery

        ensure_bigquery(bigquery.Client(project=project, location=location), project, dataset,
                        location, lines)
    return lines


def add_init_gcp_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``init-gcp`` sub-command to an ``argparse`` sub-parsers object; returns it."""
    p = subparsers.add_parser(
        "init-gcp", help="Create Pub/Sub, Bigtable and BigQuery resources (idempotent).",
        description="Create the topics, subscriptions, Bigtable instance/tables/column families "
                    "and BigQuery dataset/tables, against the emulators or a real project. "
                    "Existing resources are left as they are and reported.")
    p.add_argument("--project", default=os.environ.get("MIRAIKAKAKU_GCP_PROJECT",
                                                       "miraikakaku-local"),
                   help="Project id. Default: $MIRAIKAKAKU_GCP_PROJECT or miraikakaku-local.")
    p.add_argument("--instance", default="miraikakaku",
                   help="Bigtable instance id. Default: miraikakaku.")
    p.add_argument("--dataset", default="miraikakaku",
                   help="BigQuery dataset id; empty skips BigQuery. Default: miraikakaku.")
    p.add_argument("--location", default="US", help="BigQuery dataset location. Default: US.")
    p.add_argument("--bigtable-zone", default="us-central1-b",
                   help="Zone of a new Bigtable cluster (real project). Default: us-central1-b.")
    p.add_argument("--bigtable-nodes", type=int, default=1,
                   help="Nodes of a new Bigtable cluster (real project). Default: 1.")
    p.add_argument("--emulator", action=argparse.BooleanOptionalAction, default=None,
                   help="Target the emulators. Default: yes when PUBSUB_EMULATOR_HOST or "
                        "BIGTABLE_EMULATOR_HOST is set.")
    return p


def run_init_gcp(args: argparse.Namespace) -> int:
    """Run ``init-gcp`` with parsed arguments; prints the report; returns the exit code
    (0 done, 2 bad arguments or environment, 1 a Google Cloud call failed)."""
    from google.api_core import exceptions

    logging.basicConfig(level=logging.WARNING)
    emulator = emulator_detected() if args.emulator is None else args.emulator
    try:
        lines = init_gcp(args.project, instance=args.instance, dataset=args.dataset or None,
                         emulator=emulator, location=args.location,
                         bigtable_zone=args.bigtable_zone, bigtable_nodes=args.bigtable_nodes)
    except ValueError as e:
        print(f"miraikakaku init-gcp: {e}", file=sys.stderr)
        return 2
    except exceptions.GoogleAPICallError as e:
        print(f"miraikakaku init-gcp: {e}", file=sys.stderr)
        return 1
    print(f"project {args.project}" + (" (emulators)" if emulator else ""))
    for line in lines:
        print("  " + line)
    return 0
