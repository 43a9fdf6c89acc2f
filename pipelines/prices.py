"""The price pipeline: files (or, later, Pub/Sub) → validated bars, features, predictions, alerts.

Graph (stable step labels, so Dataflow ``--update`` works)::

    ReadPrices → ParseEvents → ValidateEvents → DeduplicateEvents → AddEventTimestamps
      → ComputeFeatures (ordered per-instrument state: flags, price alerts, LSTM windows)
      → PredictNextReturn (RunInference) → ComputePredictedMoveAlerts
    everything (bars, flags, predictions, alerts, instruments, dead letters) → WriteToServingStore

Run it: ``miraikakaku run`` (defaults: the S&P 500 five-year file and the Tokyo daily file in
../shared/data, DirectRunner, the latest trained model) or ``miraikakaku run --input my.csv``.
``run()`` returns a ``RunSummary`` whose counters reconcile:
``events_read = bars_stored + dead_lettered(parse, validate) + duplicates``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.window import TimestampedValue

from miraikakaku.settings import Settings, get_settings
from transforms import progress
from transforms.alerts import ComputePredictedMoveAlerts, load_rules
from transforms.dedup import DeduplicateEvents
from transforms.features import DEFAULT_WINDOW
from transforms.ordering import ComputeFeatures
from transforms.parsing import FileSpec, ParseEvents, ReadPriceFiles, file_spec
from transforms.sinks import WriteToServingStore
from transforms.validation import ValidateEvents

__all__ = ["PriceOptions", "RunSummary", "build_pipeline", "run"]


class PriceOptions(PipelineOptions):
    """Options of the price pipeline (each also a flex-template parameter later)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--input", action="append", default=None,
            help="Price file (CSV, CSV.gz or Parquet); repeat for several. Default: the S&P 500 "
                 "five-year and Tokyo daily files in ../shared/data/normalized.")
        parser.add_argument(
            "--source", default=None,
            help="Source name for rows without a `source` column (default: from the file name, "
                 "else 'user').")
        parser.add_argument("--store_path", default=None,
                            help="Embedded serving store (SQLite). Default: $DATA_DIR/serving.db.")
        parser.add_argument("--model_dir", default=None,
                            help="Versioned model directory. Default: $DATA_DIR/models/lstm_daily.")
        parser.add_argument("--model_version", default=None,
                            help="Model version to use. Default: the latest.")
        parser.add_argument("--skip_inference", default="false", choices=["true", "false"],
                            help="'true' runs without a model (no predictions). Default: false.")
        parser.add_argument("--alert_rules", default=None,
                            help="YAML alert rules. Default: config/alert_rules.yaml.")
        parser.add_argument("--source_priority", default=None,
                            help="Comma-separated sources, best first. Default: from settings.")
        parser.add_argument("--default_mic", default="XNYS",
                            help="MIC for symbols not in the reference data. Default: XNYS.")
        parser.add_argument("--inference_min_batch_size", type=int, default=32,
                            help="RunInference min batch size. Default: 32.")
        parser.add_argument("--inference_max_batch_size", type=int, default=1024,
                            help="RunInference max batch size. Default: 1024.")
        parser.add_argument("--write_batch_size", type=int, default=5000,
                            help="Max records per store transaction. Default: 5000.")


@dataclasses.dataclass
class RunSummary:
    """What a run did (from Beam counters; times in seconds).

    ``reconciled`` is True when ``events_read == bars_stored + parse_dead_letters +
    validation_dead_letters + duplicates``.
    """

    inputs: list[str]
    model: str | None
    events_read: int = 0
    bars_stored: int = 0
    flagged_bars: int = 0
    duplicates: int = 0
    conflicting_duplicates: int = 0
    parse_dead_letters: int = 0
    validation_dead_letters: int = 0
    inference_dead_letters: int = 0
    dead_letters_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)
    flags_by_name: dict[str, int] = dataclasses.field(default_factory=dict)
    windows: int = 0
    predictions: int = 0
    alerts: int = 0
    late_events: int = 0
    instruments: int = 0
    wall_seconds: float = 0.0
    store_path: str = ""

    @property
    def events_per_second(self) -> float:
        """Events read per wall-clock second."""
        return self.events_read / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def reconciled(self) -> bool:
        """True when every event read is stored, dead-lettered or a counted duplicate."""
        return self.events_read == (self.bars_stored + self.parse_dead_letters
                                    + self.validation_dead_letters + self.duplicates)

    def to_dict(self) -> dict:
        """JSON-ready dict including the derived fields."""
        d = dataclasses.asdict(self)
        d["events_per_second"] = round(self.events_per_second, 1)
        d["reconciled"] = self.reconciled
        return d


@dataclasses.dataclass(frozen=True)
class _Resolved:
    specs: list[FileSpec]
    store_path: str
    source_priority: list[str]
    rules: list
    model_uri: str | None
    model_name: str
    model_version: str | None
    window: int
    bounded: bool


def _resolve(opts: PipelineOptions, settings: Settings) -> _Resolved:
    """Validate options and run the cheap preflight checks (files, model, rules)."""
    po = opts.view_as(PriceOptions)
    inputs = po.input or [str(p) for p in settings.default_inputs]
    specs = [file_spec(p, po.source) for p in inputs]
    origins = [s.origin for s in specs]
    if len(set(origins)) != len(origins):
        raise ValueError(f"two inputs share a file name: {origins}")
    priority = ([s.strip() for s in po.source_priority.split(",") if s.strip()]
                if po.source_priority else list(settings.source_priority))
    rules = load_rules(po.alert_rules or settings.alert_rules_path)
    model_uri = model_version = None
    window = DEFAULT_WINDOW
    if po.skip_inference != "true":
        from models.registry import latest_version, list_versions

        model_dir = Path(po.model_dir) if po.model_dir else settings.model_dir
        if po.model_version:
            matches = [v for v in list_versions(model_dir) if v.version == po.model_version]
            if not matches:
                raise FileNotFoundError(f"no model version {po.model_version} in {model_dir}")
            mv = matches[0]
        else:
            mv = latest_version(model_dir)
        model_uri, model_version = str(mv.path), mv.version
        window = int(mv.metadata.get("window", DEFAULT_WINDOW))
    store_path = po.store_path or str(settings.store_path)
    bounded = not opts.view_as(StandardOptions).streaming
    return _Resolved(specs, store_path, priority, rules, model_uri, settings.model_name,
                     model_version, window, bounded)


def build_pipeline(p: beam.Pipeline, r: _Resolved, *, write_batch_size: int = 5000,
                   default_mic: str = "XNYS", min_batch: int = 32, max_batch: int = 1024) -> None:
    """Add the price pipeline's steps to ``p`` (see the module docstring for the graph)."""
    raw = p | "ReadPrices" >> ReadPriceFiles(r.specs)
    parsed = raw | "ParseEvents" >> ParseEvents({s.origin: s for s in r.specs}, default_mic)
    valid = parsed.events | "ValidateEvents" >> ValidateEvents()
    unique = valid.events | "DeduplicateEvents" >> DeduplicateEvents(bounded=r.bounded)
    timed = unique | "AddEventTimestamps" >> beam.Map(
        lambda e: TimestampedValue(e, e.event_time.timestamp()))
    ordered = timed | "ComputeFeatures" >> ComputeFeatures(
        r.source_priority, r.rules, r.window, bounded=r.bounded, default_mic=default_mic)
    outputs = [unique, ordered.flags, ordered.alerts, ordered.instruments,
               parsed.dead_letters, valid.dead_letters]
    if r.model_uri is not None:
        from transforms.inference import PredictNextReturn

        inferred = ordered.windows | "PredictNextReturn" >> PredictNextReturn(
            r.model_uri, r.model_name, r.model_version or "", min_batch, max_batch)
        alerts = inferred.predictions | "ComputePredictedMoveAlerts" >> \
            ComputePredictedMoveAlerts(r.rules)
        outputs += [inferred.predictions, inferred.dead_letters, alerts]
    (tuple(outputs)
     | "FlattenRecords" >> beam.Flatten()
     | "WriteToServingStore" >> WriteToServingStore(
         r.store_path, r.source_priority, max_batch_size=write_batch_size))


def _counters(result) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for c in result.metrics().query()["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        key = (c.key.metric.namespace, c.key.metric.name)
        out[key] = out.get(key, 0) + int(value or 0)
    return out


def _summarize(counters: dict[tuple[str, str], int], r: _Resolved, wall: float) -> RunSummary:
    def get(ns: str, name: str) -> int:
        return counters.get((ns, name), 0)

    w = "WriteToServingStore"
    dead = {k[1].split(":", 1)[1]: v for k, v in counters.items()
            if k[0] == w and k[1].startswith("dead_letter:")}
    flags = {k[1].split(":", 1)[1]: v for k, v in counters.items()
             if k[0] == w and k[1].startswith("flag:")}
    return RunSummary(
        inputs=[s.path for s in r.specs],
        model=f"{r.model_name}/{r.model_version}" if r.model_version else None,
        events_read=get("ParseEvents", "events_read"),
        bars_stored=get(w, "PriceEvent"),
        flagged_bars=get(w, "flagged_bars"),
        duplicates=get("DeduplicateEvents", "duplicates")
        + get("DeduplicateEvents", "streaming_in") - get("DeduplicateEvents", "streaming_out"),
        conflicting_duplicates=get("DeduplicateEvents", "conflicting_duplicates"),
        parse_dead_letters=sum(v for k, v in dead.items() if k.startswith("ParseEvents:")),
        validation_dead_letters=sum(v for k, v in dead.items()
                                    if k.startswith("ValidateEvents:")),
        inference_dead_letters=sum(v for k, v in dead.items() if k.startswith("RunInference:")),
        dead_letters_by_reason=dict(sorted(dead.items())),
        flags_by_name=dict(sorted(flags.items())),
        windows=get("ComputeFeatures", "windows"),
        predictions=get(w, "Prediction"),
        alerts=get(w, "AlertEvent"),
        late_events=get("ComputeFeatures", "late_events"),
        instruments=get(w, "Instrument"),
        wall_seconds=wall,
        store_path=r.store_path,
    )


class _LiveProgress:
    """Shows the stages' progress (``transforms.progress``) with rich while the pipeline runs."""

    STAGES = (("read", "read + parse"), ("ordered", "ordered per instrument"),
              ("predicted", "predicted (RunInference)"), ("written", "records written to store"))

    def __init__(self, total_events: int | None, windows_hint: bool, enabled: bool) -> None:
        self._total = total_events
        self._predict = windows_hint
        self._enabled = enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        progress.reset()
        if self._enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns) as bar:
            tasks = {}
            for key, label in self.STAGES:
                if key == "predicted" and not self._predict:
                    continue
                total = self._total if key in ("read", "ordered") else None
                tasks[key] = bar.add_task(label, total=total, start=key == "read")
            def refresh() -> None:
                counts = progress.snapshot()
                for key, task in tasks.items():
                    n = counts.get(key, 0)
                    if n:
                        bar.start_task(task)
                    bar.update(task, completed=n)

            while not self._stop.wait(0.5):
                refresh()
            refresh()
            for task in tasks.values():  # done: the totals were estimates
                done = bar.tasks[task].completed
                bar.update(task, total=done, completed=done)


def _count_lines(specs: Sequence[FileSpec]) -> int | None:
    import gzip

    total = 0
    for s in specs:
        if s.columns is None:
            return None
        opener = gzip.open if s.path.endswith(".gz") else open
        with opener(s.path, "rb") as f:
            total += sum(1 for _ in f) - 1
    return total


def run(argv: Sequence[str] | None = None, *, settings: Settings | None = None,
        show_progress: bool = False, test_pipeline: beam.Pipeline | None = None) -> RunSummary:
    """Validate options, build the pipeline, run it to completion and summarize.

    Args:
        argv: pipeline arguments (``--input``, ``--runner``, see ``PriceOptions``).
        settings: platform settings (default: from the environment).
        show_progress: show a live progress display.
        test_pipeline: a pipeline to build into instead of a new one (tests).

    Returns:
        The run's ``RunSummary`` (also written to ``$DATA_DIR/runs/<UTC time>.json``).

    Raises:
        FileNotFoundError: a missing input file or no trained model (run ``miraikakaku train``).
        ValueError: a bad option or alert-rules file.
    """
    settings = settings or get_settings()
    opts = PipelineOptions(list(argv or []), direct_num_workers=1,
                           direct_running_mode="in_memory")
    r = _resolve(opts, settings)
    po = opts.view_as(PriceOptions)
    p = test_pipeline or beam.Pipeline(options=opts)
    build_pipeline(p, r, write_batch_size=po.write_batch_size, default_mic=po.default_mic,
                   min_batch=po.inference_min_batch_size, max_batch=po.inference_max_batch_size)
    Path(r.store_path).parent.mkdir(parents=True, exist_ok=True)
    from stores.sqlite import SqliteServingStore

    SqliteServingStore(r.store_path, source_priority=r.source_priority).close()
    total = _count_lines(r.specs) if show_progress else None
    t0 = time.perf_counter()
    with _LiveProgress(total, r.model_uri is not None, show_progress):
        result = p.run()
        result.wait_until_finish()
    summary = _summarize(_counters(result), r, time.perf_counter() - t0)
    runs = settings.data_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (runs / f"{stamp}.json").write_text(json.dumps(summary.to_dict(), indent=2))
    return summary
