"""Flex-template files agree with the pipeline: metadata parameters, Dockerfiles and the launcher.

Checks ``templates/{streaming,backfill}/metadata.json`` against ``PriceOptions`` (every parameter
is an option, every option a job requires is a non-optional parameter, regexes compile and accept
or reject example values the way the pipeline would), the Dockerfiles' ``FLEX_TEMPLATE_PYTHON_*``
variables and lock install, and that ``templates/launcher.py`` exposes ``main()`` which forwards
its arguments to ``pipelines.prices.run``. Nothing is built or launched. Run:
``TF_USE_LEGACY_KERAS=1 .venv/bin/python -m pytest tests/unit/test_templates.py -q``.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.prices import PriceOptions

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
JOBS = ("streaming", "backfill")
IMAGE_ROOT = "/template"  # WORKDIR and copy target of the repository in the Dockerfiles
BASE_IMAGE = "gcr.io/dataflow-templates-base/python310-template-launcher-base"

# Options a job cannot run without on Dataflow: its source, and a sink that is not worker-local.
REQUIRED = {"streaming": {"subscription", "sink"}, "backfill": {"input", "sink"}}
# Options that must not appear (exclusive with the job's source).
EXCLUDED = {"streaming": {"input", "source", "store_path"},
            "backfill": {"subscription", "store_path"}}
# Documented defaults the metadata deliberately rejects on Dataflow.
DEFAULTS_REJECTED = {"sink": "sqlite is a worker-local file on Dataflow"}
PARAM_TYPES = {"DEFAULT", "TEXT", "GCS_READ_BUCKET", "GCS_WRITE_BUCKET", "GCS_READ_FILE",
               "GCS_WRITE_FILE", "GCS_READ_FOLDER", "GCS_WRITE_FOLDER", "PUBSUB_TOPIC",
               "PUBSUB_SUBSCRIPTION", "BIGQUERY_TABLE", "BOOLEAN", "ENUM", "NUMBER"}

# name → (values the regexes must accept, values they must reject)
EXAMPLES: dict[str, tuple[list[str], list[str]]] = {
    "subscription": (["projects/my-project/subscriptions/prices-pipeline"],
                     ["projects/my-project/topics/prices", "prices-pipeline",
                      "projects//subscriptions/s", "projects/p/subscriptions/s/extra"]),
    "alerts_topic": (["projects/my-project/topics/alerts"],
                     ["projects/my-project/subscriptions/alerts", "alerts"]),
    "dead_letter_topic": (["projects/my-project/topics/prices-dead-letters"],
                          ["topics/prices-dead-letters", "projects/p/topics/"]),
    "input": (["gs://my-bucket/history/us_daily_sp500_5yr_2013_2018.normalized.csv.gz",
               "gs://my-bucket/a.csv", "gs://my-bucket/x/y.parquet"],
              ["/data/prices.csv", "gs://my-bucket/history/*.csv", "gs://my-bucket/history/",
               "gs://My_Bucket/a.csv", "gs://my-bucket/a.json", "s3://my-bucket/a.csv"]),
    "bq_dataset": (["miraikakaku", "my-project:miraikakaku", "prices_2024"],
                   ["my-project.miraikakaku", "my-project:", "bad dataset", "p:d:x"]),
    "bigtable_project": (["my-project", "example.com:my-project"],
                         ["My-Project", "p", "my_project"]),
    "bigtable_instance": (["miraikakaku", "prices-prod"], ["mk", "Prices", "prices_prod"]),
    "model_dir": (["/template/models/lstm_daily"], ["gs://bucket/models", "models/lstm", ""]),
    "model_version": (["3", "12"], ["v3", "latest", ""]),
    "skip_inference": (["true", "false"], ["True", "yes", "1", ""]),
    "sink": (["bigtable"], ["sqlite", "Bigtable", ""]),
    "alert_rules": (["/template/config/alert_rules.yaml", "config/alert_rules.yml"],
                    ["gs://bucket/rules.yaml", "rules.json"]),
    "source_priority": (["chart0,sp500_5yr,yfinance", "user"], ["chart0, user", ",user", ""]),
    "default_mic": (["XNYS", "XTKS"], ["xnys", "NYSE1", ""]),
    "source": (["sp500_5yr"], ["two words", ""]),
    "allowed_lateness_seconds": (["60", "0.5"], ["-1", "1e3", "abc"]),
    "dedup_horizon_seconds": (["259200"], ["3d"]),
    "idle_seconds": (["5"], ["five"]),
    "inference_min_batch_size": (["32"], ["0", "3.5"]),
    "inference_max_batch_size": (["1024"], ["-1"]),
    "inference_max_batch_duration_secs": (["1", "10"], ["0", "0.5", "abc"]),
    "model_handler": (["local", "vertex"], ["Vertex", "tf", ""]),
    "vertex_endpoint_id": (["1234567890"], ["endpoints/123", "abc", ""]),
    "vertex_project": (["my-project", "example.com:my-project"], ["My-Project", "p"]),
    "vertex_location": (["us-central1", "europe-west4", "asia-northeast1"],
                        ["global", "US-central1", "us central1"]),
    "vertex_network": (["projects/12345/global/networks/my-vpc"],
                       ["my-vpc", "projects/my-project/global/networks/my-vpc"]),
    "vertex_api_endpoint": (["us-central1-aiplatform.googleapis.com", "http://127.0.0.1:8080"],
                            ["ftp://host", "host/path", ""]),
    "vertex_num_retries": (["5", "0"], ["-1", "two"]),
    "vertex_fallback": (["true", "false"], ["True", "yes", ""]),
    "vertex_send_last_price": (["true", "false"], ["1", ""]),
    "model_watch_interval_seconds": (["60", "0", "2.5"], ["-1", "1m"]),
    "challenger_model_version": (["2"], ["v2", ""]),
    "challenger_model_dir": (["/template/models/lstm_daily"], ["gs://bucket/models", "models"]),
    "challenger_share": (["0.1", "0", "1", "1.0"], ["1.5", "-0.1", "10%", ""]),
}


def _options() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    PriceOptions._add_argparse_args(parser)
    return {a.dest: a for a in parser._actions if a.dest != "help"}


OPTIONS = _options()


def _metadata(job: str) -> dict:
    return json.loads((TEMPLATES / job / "metadata.json").read_text(encoding="utf-8"))


def _params(job: str) -> dict[str, dict]:
    return {p["name"]: p for p in _metadata(job)["parameters"]}


def _accepts(param: dict, value: str) -> bool:
    return all(re.search(rx, value) for rx in param.get("regexes", []))


def _dockerfile(job: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (TEMPLATES / job / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instr, _, rest = line.strip().partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def _env(job: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, rest in _dockerfile(job):
        if instr != "ENV":
            continue
        parts = shlex.split(rest)
        if parts and "=" not in parts[0]:  # legacy form: ENV KEY VALUE
            env[parts[0]] = " ".join(parts[1:])
        else:
            env.update(p.split("=", 1) for p in parts)
    return env


def _in_repo(image_path: str) -> Path:
    """The repository file that an absolute path in the image was copied from."""
    assert image_path.startswith(IMAGE_ROOT + "/"), image_path
    return REPO / image_path[len(IMAGE_ROOT) + 1:]


@pytest.mark.parametrize("job", JOBS)
def test_metadata_is_json_with_the_template_keys(job):
    meta = _metadata(job)
    assert isinstance(meta["name"], str) and meta["name"]
    assert isinstance(meta["description"], str) and meta["description"]
    assert isinstance(meta["parameters"], list) and meta["parameters"]
    assert meta.get("streaming") is (job == "streaming")


@pytest.mark.parametrize("job", JOBS)
def test_every_parameter_is_described_and_its_regexes_compile(job):
    names = [p.get("name") for p in _metadata(job)["parameters"]]
    assert len(names) == len(set(names)), "duplicate parameter names"
    for p in _metadata(job)["parameters"]:
        for key in ("name", "label", "helpText"):
            assert isinstance(p.get(key), str) and p[key].strip(), (p.get("name"), key)
        assert isinstance(p.get("isOptional", False), bool), p["name"]
        assert p.get("paramType", "TEXT") in PARAM_TYPES, p["name"]
        assert p.get("regexes"), f"{p['name']} has no regexes"
        for rx in p["regexes"]:
            re.compile(rx)
            assert rx.startswith("^") and rx.endswith("$"), (p["name"], rx)


@pytest.mark.parametrize("job", JOBS)
def test_every_parameter_is_a_pipeline_option(job):
    unknown = set(_params(job)) - set(OPTIONS)
    assert not unknown, f"not PriceOptions options: {sorted(unknown)}"


@pytest.mark.parametrize("job", JOBS)
def test_required_options_are_exactly_the_non_optional_parameters(job):
    params = _params(job)
    missing = REQUIRED[job] - set(params)
    assert not missing, f"required options missing from metadata: {sorted(missing)}"
    required = {n for n, p in params.items() if not p.get("isOptional", False)}
    assert required == REQUIRED[job]
    assert not EXCLUDED[job] & set(params)


@pytest.mark.parametrize("job", JOBS)
def test_regexes_accept_valid_and_reject_invalid_examples(job):
    params = _params(job)
    untested = set(params) - set(EXAMPLES)
    assert not untested, f"add examples for {sorted(untested)}"
    for name, param in params.items():
        good, bad = EXAMPLES[name]
        for value in good:
            assert _accepts(param, value), f"{job}.{name} rejects {value!r}"
        for value in bad:
            assert not _accepts(param, value), f"{job}.{name} accepts {value!r}"


@pytest.mark.parametrize("job", JOBS)
def test_option_defaults_and_choices_agree_with_the_regexes(job):
    for name, param in _params(job).items():
        action = OPTIONS[name]
        if action.choices:
            allowed = {c for c in action.choices if _accepts(param, c)}
            assert allowed, f"{name}: no choice passes the regexes"
            assert not _accepts(param, "not-a-choice")
        if action.default is not None and name not in DEFAULTS_REJECTED:
            default = action.default
            if isinstance(default, float) and default.is_integer():
                default = int(default)
            assert _accepts(param, str(default)), f"{name}: default {default!r} rejected"
    for name in DEFAULTS_REJECTED:
        if name in _params(job):
            assert not _accepts(_params(job)[name], str(OPTIONS[name].default))


@pytest.mark.parametrize("job", JOBS)
def test_valid_parameter_values_parse_as_price_options(job):
    """What the launcher receives (``--name=value`` strings) parses into typed options."""
    argv = [f"--{name}={EXAMPLES[name][0][0]}" for name in _params(job)]
    opts = PipelineOptions(argv).view_as(PriceOptions)
    for name in _params(job):
        value = getattr(opts, name)
        action = OPTIONS[name]
        if action.type is not None:
            assert isinstance(value, action.type), (name, value)
        if action.choices:
            assert value in action.choices
    if job == "backfill":
        assert opts.input == [EXAMPLES["input"][0][0]]
    assert opts.sink == "bigtable"


@pytest.mark.parametrize("job", JOBS)
def test_dockerfile_sets_the_flex_template_files_and_installs_the_lock(job):
    instructions = _dockerfile(job)
    env = _env(job)
    assert instructions[0] == ("FROM", BASE_IMAGE) or \
        instructions[0][1].startswith((BASE_IMAGE + ":", BASE_IMAGE + "@"))
    assert ("WORKDIR", IMAGE_ROOT) in instructions
    assert ("COPY", f". {IMAGE_ROOT}") in instructions

    py_file = _in_repo(env["FLEX_TEMPLATE_PYTHON_PY_FILE"])
    assert py_file == TEMPLATES / "launcher.py" and py_file.is_file()
    setup_file = _in_repo(env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"])
    assert setup_file == REPO / "setup.py" and setup_file.is_file()
    assert env["TF_USE_LEGACY_KERAS"] == "1"
    assert env["PYTHONPATH"] == IMAGE_ROOT

    runs = [rest for instr, rest in instructions if instr == "RUN"]
    install = [r for r in runs if "pip install" in r and "requirements.lock" in r]
    assert len(install) == 1, runs
    assert "--no-deps" in install[0]
    assert f"-r {IMAGE_ROOT}/requirements.lock" in install[0]
    assert ("COPY", f"requirements.lock {IMAGE_ROOT}/requirements.lock") in instructions
    lock = (REPO / "requirements.lock").read_text(encoding="utf-8")
    if "--hash=" in lock:  # STYLE §6: once the lock has hashes, require them
        assert "--require-hashes" in install[0]


@pytest.mark.parametrize("job", JOBS)
def test_dockerignore_keeps_what_the_launcher_and_workers_need(job):
    patterns = [ln.strip() for ln in
                (TEMPLATES / job / "Dockerfile.dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert {".venv", "var", ".git"} <= set(patterns)
    needed = ["setup.py", "requirements.lock", "templates/launcher.py", "config/alert_rules.yaml",
              "pipelines/prices.py", "transforms", "stores", "models", "miraikakaku"]
    for path in needed:
        assert (REPO / path).exists(), path
        parts = Path(path).parts
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        hit = [p for p in patterns if any(fnmatch.fnmatch(x, p) for x in prefixes)]
        assert not hit, f"{path} excluded by {hit}"


def test_cloudbuild_builds_each_templates_dockerfile():
    spec = yaml.safe_load((TEMPLATES / "cloudbuild.yaml").read_text())
    args = spec["steps"][0]["args"]
    dockerfile = args[args.index("-f") + 1]
    for job in JOBS:
        assert (REPO / dockerfile.replace("${_JOB}", job)).is_file()
    assert args[-1] == "."  # the repository root is the build context


def _load_launcher():
    spec = importlib.util.spec_from_file_location("flex_launcher", TEMPLATES / "launcher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launcher_exposes_main_that_forwards_argv_to_run(monkeypatch):
    launcher = _load_launcher()
    assert callable(launcher.main)
    assert (launcher.__doc__ or "").strip()
    calls = []
    monkeypatch.setattr("pipelines.prices.run", lambda argv: calls.append(argv) or "started")
    argv = ["--subscription=projects/p/subscriptions/s", "--sink=bigtable",
            "--skip_inference=true", "--runner=DataflowRunner"]
    assert launcher.main(argv) == 0
    assert calls == [argv]


def test_launcher_reads_sys_argv_by_default(monkeypatch):
    launcher = _load_launcher()
    calls = []
    monkeypatch.setattr("pipelines.prices.run", lambda argv: calls.append(argv))
    monkeypatch.setattr("sys.argv", ["launcher.py", "--input=gs://b/a.csv"])
    assert launcher.main() == 0
    assert calls == [["--input=gs://b/a.csv"]]
