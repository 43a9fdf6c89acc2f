"""The price pipeline: files (or, later, Pub/Sub) → validated bars, features, predictions, alerts.

Graph (stable step labels, so Dataflow ``--update`` works)::

    ReadPrices → ParseEvents → ValidateEvents → DeduplicateEvents → AddEventTimestamps
      → ComputeFeatures (ordered per-instrument state: flags, price alerts, LSTM windows)
      → PredictNextReturn (RunInference: local SavedModel, or a Vertex AI endpoint with the
        local model as fallback; new model versions hot-swapped in streaming runs; an optional
        challenger on a share of instruments) → ComputePredictedMoveAlerts
      → TrackPredictions (streaming: each prediction scored against its target session's bar;
        bounded runs: the batch job ``miraikakaku track``)
    streaming only: trades → AggregateTrades (minute and session bars), DetectPriceCrossings;
      intraday events → MonitorFreshness (stale_feed system alerts: no event for
      --freshness_minutes of open exchange time; transforms/freshness.py) → the alerts
    everything (bars, flags, predictions, alerts, instruments, dead letters) → WriteToServingStore
    ValidateEvents (--validation): 'suite' (default) validates micro-batches with the
      great-expectations price_events suite (quality.stream.ValidateWithSuite) and also emits
      quality_results rows (window × instrument × rule) to the analytics store and BigQuery;
      'basic' the per-event checks (transforms.validation); 'off' none (benchmarks)
    embedded analytics: everything + each window's feature vector → WriteToAnalyticsStore
      (Parquet per table under --analytics_dir, default $DATA_DIR/warehouse; analytics/sink.py)
    optional Pub/Sub: alerts → PublishAlerts (--alerts_topic); stored price events and
      predictions → PublishPrices / PublishPredictions (--prices_topic, --predictions_topic: the
      notifier's events, notifier.events wire format); dead letters → PublishDeadLetters

Run it: ``miraikakaku run`` (defaults: the S&P 500 five-year file and the Tokyo daily file in
../shared/data, DirectRunner, the latest trained model) or ``miraikakaku run --input my.csv``.
``run()`` returns a ``RunSummary`` whose counters reconcile:
``events_read = bars_stored + dead_lettered(parse, validate) + duplicates``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)
from apache_beam.runners.direct.direct_runner import DirectPipelineResult
from apache_beam.transforms.window import TimestampedValue

from miraikakaku.grammar import EventLimits
from miraikakaku.settings import Settings, get_settings
from stores.spec import StoreSpec
from transforms import progress
from transforms.alerts import ComputePredictedMoveAlerts, load_rules
from transforms.dedup import DeduplicateEvents
from transforms.features import DEFAULT_WINDOW
from transforms.ordering import ComputeFeatures
from transforms.parsing import FileSpec, ParseEvents, ReadPriceFiles, file_spec
from transforms.sinks import WriteToServingStore
from transforms.validation import ValidateEvents

__all__ = ["PriceOptions", "RunSummary", "build_pipeline", "run"]

TRACKING_GRACE_SECONDS = 600.0
"""Wall-clock seconds a session's tracking state outlives its event-time horizon, so a replay of
history (watermark far ahead of the events) still matches each prediction with its bar."""


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
        parser.add_argument("--inference_max_batch_duration_secs", type=int, default=None,
                            help="Streaming: longest wait in seconds to fill a RunInference "
                                 "batch. Default: Beam's.")
        parser.add_argument(
            "--model_handler", default="local", choices=["local", "vertex"],
            help="'local' scores with the SavedModel in --model_dir (TFModelHandlerNumpy); "
                 "'vertex' with a Vertex AI endpoint (VertexAIModelHandlerJSON), the local model "
                 "answering when the endpoint returns 429/5xx past its retries. Default: local.")
        parser.add_argument("--vertex_endpoint_id", default=None,
                            help="Numeric Vertex AI endpoint id (--model_handler vertex).")
        parser.add_argument("--vertex_project", default=None,
                            help="Project of the Vertex AI endpoint. Default: --project.")
        parser.add_argument("--vertex_location", default="us-central1",
                            help="Region of the Vertex AI endpoint. Default: us-central1.")
        parser.add_argument("--vertex_network", default=None,
                            help="VPC network of a private endpoint "
                                 "(projects/N/global/networks/V). Default: none (public).")
        parser.add_argument("--vertex_api_endpoint", default=None,
                            help="API host instead of {location}-aiplatform.googleapis.com "
                                 "(e.g. Private Service Connect). Default: the regional host.")
        parser.add_argument("--vertex_num_retries", type=int, default=5,
                            help="Retries of a 429/5xx answer (exponential backoff from 5 s) "
                                 "before the local fallback answers. Default: 5.")
        parser.add_argument("--vertex_send_last_price", default="true", choices=["true", "false"],
                            help="'true': each instance is {windows, last_price}, the inputs of "
                                 "the TFX export's serving_default; 'false': {windows} only (a "
                                 "model saved by models.registry). Default: true.")
        parser.add_argument("--vertex_fallback", default="true", choices=["true", "false"],
                            help="'true': the local model answers batches the endpoint failed "
                                 "with 429/5xx (counted as fallback_predictions); 'false': they "
                                 "are dead-lettered. Default: true.")
        parser.add_argument("--model_watch_interval_seconds", type=float, default=60.0,
                            help="Streaming without --model_version: poll --model_dir this often "
                                 "and hot-swap to a new complete version without a restart; 0 "
                                 "keeps the version the job started with. Default: 60.")
        parser.add_argument("--challenger_model_version", default=None,
                            help="Model version that also scores --challenger_share of the "
                                 "instruments (stored as role 'challenger'). Default: none.")
        parser.add_argument("--challenger_model_dir", default=None,
                            help="Model directory of the challenger. Default: --model_dir.")
        parser.add_argument("--challenger_share", type=float, default=0.0,
                            help="Fraction of instruments (stable hash of the instrument id) the "
                                 "challenger scores, 0..1. Default: 0.")
        parser.add_argument("--write_batch_size", type=int, default=5000,
                            help="Max records per store transaction. Default: 5000.")
        parser.add_argument(
            "--subscription", default=None,
            help="Pub/Sub subscription (projects/P/subscriptions/S) to read PriceEvents from; "
                 "implies --streaming. Default: none (read --input files).")
        parser.add_argument(
            "--max_in_flight_messages", type=int, default=5000,
            help="--subscription on the DirectRunner: Pub/Sub messages pulled but not yet "
                 "written (or dropped as repeats) at which the reader pauses; a message is "
                 "acknowledged only after that write (transforms.pubsub_ack). Default: 5000.")
        parser.add_argument("--sink", default="sqlite", choices=["sqlite", "bigtable"],
                            help="Serving store: the embedded SQLite file or Bigtable. "
                                 "Default: sqlite.")
        parser.add_argument("--bigtable_project", default=None,
                            help="Bigtable project. Default: --project, else "
                                 "$MIRAIKAKAKU_GCP_PROJECT, else miraikakaku-local.")
        parser.add_argument("--bigtable_instance", default="miraikakaku",
                            help="Bigtable instance. Default: miraikakaku.")
        parser.add_argument("--bq_dataset", default=None,
                            help="BigQuery dataset (PROJECT:DATASET or DATASET) to also write "
                                 "bars, predictions, alerts and dead letters to. Default: none.")
        parser.add_argument("--analytics_dir", default=None,
                            help="Embedded analytics store (Parquet files per table that "
                                 "analytics.sink.connect and `miraikakaku report` read while the "
                                 "pipeline writes); '' turns it off. Default: "
                                 "$DATA_DIR/warehouse with --sink sqlite, off with bigtable.")
        parser.add_argument("--alerts_topic", default=None,
                            help="Pub/Sub topic (projects/P/topics/T) for alert events. "
                                 "Default: none (embedded outbox table only).")
        parser.add_argument("--prices_topic", default=None,
                            help="Pub/Sub topic (projects/P/topics/T) for the validated price "
                                 "events the store receives, in the notifier's wire format "
                                 "(notifier.events; init-gcp creates prices-validated). "
                                 "Default: none (embedded outbox table only).")
        parser.add_argument("--predictions_topic", default=None,
                            help="Pub/Sub topic (projects/P/topics/T) for predictions, in the "
                                 "notifier's wire format (init-gcp creates predictions). "
                                 "Default: none (embedded outbox table only).")
        parser.add_argument("--dead_letter_topic", default=None,
                            help="Pub/Sub topic for unparseable messages. Default: none.")
        parser.add_argument("--allowed_lateness_seconds", type=float, default=60.0,
                            help="How late a trade may arrive and still join its bars. "
                                 "Default: 60.")
        parser.add_argument("--freshness_minutes", type=float, default=None,
                            help="Streaming: open-exchange minutes without an event of an "
                                 "instrument before a stale_feed system alert; 0 turns it off. "
                                 "Default: MIRAIKAKAKU_FRESHNESS_MINUTES or 15.")
        parser.add_argument("--dedup_horizon_seconds", type=float, default=3 * 24 * 3600,
                            help="How long streaming deduplication keeps ids (processing time). "
                                 "Default: 259200 (3 days).")
        parser.add_argument("--idle_seconds", type=float, default=5.0,
                            help="Quiet time after which open bars are written as provisional. "
                                 "Default: 5.")
        parser.add_argument(
            "--validation", default=None, choices=["suite", "basic", "off"],
            help="ValidateEvents: 'suite' runs the great-expectations price_events suite on "
                 "micro-batches (quality.stream.ValidateWithSuite; also writes quality_results "
                 "rows to the analytics store / BigQuery); 'basic' the per-event checks of "
                 "transforms.validation; 'off' no validation (benchmarks only: nothing is "
                 "blocked). Default: suite, except basic for --subscription on the "
                 "DirectRunner (its Pub/Sub bundles hold what one pull returns, often a few "
                 "messages and at most 500, so a GX call, ~0.1-1 s, per bundle would dominate "
                 "the stream).")
        parser.add_argument("--validation_batch_size", type=int, default=20000,
                            help="Rows per great-expectations validation call (a call costs "
                                 "~0.1-1 s whatever its size: benchmarks/quality_validation.py). "
                                 "Default: 20000.")
        parser.add_argument("--quality_window_seconds", type=int, default=None,
                            help="Event-time window of the quality_results rows. Default: "
                                 "2419200 (4 weeks from a Monday 00:00 UTC) for files, 3600 "
                                 "for --subscription.")


@dataclasses.dataclass
class RunSummary:
    """What a run did (from Beam counters; times in seconds).

    ``bars_stored`` counts input events written to the store (bars and trades; a stream's
    correction that rewrites an already stored bar is a conflicting duplicate, not a second
    bar: ``DeduplicateEvents/rewrites`` is subtracted);
    ``derived_bars`` the final minute and session bars aggregated from trades (streaming).

    ``reconciled`` is True when ``events_read == bars_stored + parse_dead_letters +
    validation_dead_letters + duplicates``.
    """

    inputs: list[str]
    model: str | None
    events_read: int = 0
    bars_stored: int = 0
    derived_bars: int = 0
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
    analytics_rows: int = 0
    analytics_dir: str = ""

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
    subscription: str | None
    store: StoreSpec
    source_priority: list[str]
    rules: list
    model_uri: str | None
    model_name: str
    model_version: str | None
    window: int
    bounded: bool
    bq_table_prefix: str | None
    alerts_topic: str | None
    dead_letter_topic: str | None
    model_dir: str | None = None
    watch_interval_seconds: float = 0.0
    vertex: object | None = None  # transforms.inference.VertexEndpoint
    vertex_fallback: bool = True
    challenger_uri: str | None = None
    challenger_share: float = 0.0
    prices_topic: str | None = None
    predictions_topic: str | None = None
    analytics_dir: str | None = None
    validation: str = "suite"
    validation_batch_size: int = 20000
    quality_window_seconds: int = 28 * 24 * 3600
    run_id: str = "local"
    limits: object | None = None  # miraikakaku.grammar.EventLimits (None: the settings')
    max_in_flight: int = 5000  # --max_in_flight_messages

    @property
    def store_path(self) -> str:
        return self.store.path or f"bigtable://{self.store.project}/{self.store.instance}"


def _resolve(opts: PipelineOptions, settings: Settings) -> _Resolved:
    """Validate options and run the cheap preflight checks (files, model, rules)."""
    po = opts.view_as(PriceOptions)
    std = opts.view_as(StandardOptions)
    if po.subscription:
        if po.input:
            raise ValueError("--subscription and --input are exclusive")
        if not po.subscription.startswith("projects/") or "/subscriptions/" not in \
                po.subscription:
            raise ValueError("--subscription must look like projects/P/subscriptions/S")
        std.streaming = True
        specs: list[FileSpec] = []
    else:
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
        inference = _resolve_inference(opts, model_dir, mv, bool(std.streaming))
    else:
        inference = {}
    if po.sink == "bigtable":
        project = (po.bigtable_project or opts.view_as(GoogleCloudOptions).project
                   or os.environ.get("MIRAIKAKAKU_GCP_PROJECT") or "miraikakaku-local")
        store = StoreSpec("bigtable", project=project, instance=po.bigtable_instance,
                          source_priority=tuple(priority))
    else:
        store = StoreSpec("sqlite", path=po.store_path or str(settings.store_path),
                          source_priority=tuple(priority))
    bq = None
    if po.bq_dataset:
        project = opts.view_as(GoogleCloudOptions).project
        bq = po.bq_dataset if ":" in po.bq_dataset or not project else \
            f"{project}:{po.bq_dataset}"
    for flag, topic in (("--prices_topic", po.prices_topic),
                        ("--predictions_topic", po.predictions_topic)):
        if topic and (not topic.startswith("projects/") or "/topics/" not in topic):
            raise ValueError(f"{flag} must look like projects/P/topics/T, got {topic!r}")
    if po.predictions_topic and model_uri is None:
        raise ValueError("--predictions_topic needs a model (drop --skip_inference true)")
    if po.validation_batch_size <= 0 or (po.quality_window_seconds or 1) <= 0:
        raise ValueError("--validation_batch_size and --quality_window_seconds must be positive")
    if po.max_in_flight_messages < 1:
        raise ValueError(f"--max_in_flight_messages must be >= 1, got "
                         f"{po.max_in_flight_messages}")
    validation = po.validation
    if validation is None:
        direct = (std.runner or "DirectRunner") in ("DirectRunner", "SwitchingDirectRunner",
                                                    "BundleBasedDirectRunner")
        validation = "basic" if std.streaming and direct else "suite"
    quality_window = po.quality_window_seconds or (3600 if std.streaming else 28 * 24 * 3600)
    run_id = opts.view_as(GoogleCloudOptions).job_name or \
        f"local-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    analytics_dir = po.analytics_dir
    if analytics_dir is None and store.kind == "sqlite":
        analytics_dir = str(settings.data_dir / "warehouse")
    return _Resolved(specs, po.subscription, store, priority, rules, model_uri,
                     settings.model_name, model_version, window, not std.streaming, bq,
                     po.alerts_topic, po.dead_letter_topic, **inference,
                     prices_topic=po.prices_topic, predictions_topic=po.predictions_topic,
                     analytics_dir=analytics_dir or None, validation=validation,
                     validation_batch_size=po.validation_batch_size,
                     quality_window_seconds=quality_window, run_id=run_id,
                     limits=EventLimits.from_settings(settings),
                     max_in_flight=po.max_in_flight_messages)


def _resolve_inference(opts: PipelineOptions, model_dir: Path, champion, streaming: bool
                       ) -> dict:
    """The model handler, hot-swap and challenger settings (``_Resolved`` fields).

    Raises:
        ValueError: a bad combination (vertex without an endpoint id or project, a share
            outside 0..1, a challenger equal to the champion or without a share).
        FileNotFoundError: the challenger version does not exist.
    """
    from models.registry import latest_version, list_versions

    po = opts.view_as(PriceOptions)
    out: dict = {"model_dir": str(model_dir)}
    if streaming and not po.model_version and po.model_watch_interval_seconds > 0:
        out["watch_interval_seconds"] = po.model_watch_interval_seconds
    if po.model_handler == "vertex":
        from transforms.inference import VertexEndpoint

        project = po.vertex_project or opts.view_as(GoogleCloudOptions).project
        if not po.vertex_endpoint_id or not project:
            raise ValueError("--model_handler vertex needs --vertex_endpoint_id and "
                             "--vertex_project (or --project)")
        out["vertex"] = VertexEndpoint(
            po.vertex_endpoint_id, project, po.vertex_location, network=po.vertex_network,
            private=po.vertex_network is not None, api_endpoint=po.vertex_api_endpoint,
            num_retries=po.vertex_num_retries,
            send_last_price=po.vertex_send_last_price == "true")
        out["vertex_fallback"] = po.vertex_fallback == "true"
    if not 0.0 <= po.challenger_share <= 1.0:
        raise ValueError(f"--challenger_share must be in 0..1, got {po.challenger_share}")
    if po.challenger_model_version or po.challenger_model_dir:
        cdir = Path(po.challenger_model_dir) if po.challenger_model_dir else model_dir
        if po.challenger_model_version:
            found = [v for v in list_versions(cdir) if v.version == po.challenger_model_version]
            if not found:
                raise FileNotFoundError(
                    f"no challenger model version {po.challenger_model_version} in {cdir}")
            challenger = found[0]
        else:
            challenger = latest_version(cdir)
        if challenger.path.resolve() == Path(champion.path).resolve():
            raise ValueError(f"the challenger is the champion ({challenger.path})")
        if po.challenger_share <= 0:
            raise ValueError("a challenger model needs --challenger_share > 0")
        out["challenger_uri"] = str(challenger.path)
        out["challenger_share"] = po.challenger_share
    return out


def _read(p: beam.Pipeline, r: _Resolved, default_mic: str):
    """The edge that reads: price files (bounded) or a Pub/Sub subscription (unbounded).

    The Pub/Sub read takes no ``timestamp_attribute``: Beam parses that attribute inside the
    reader, before any DoFn, so one message with an unparseable ``event_time`` attribute failed
    the reader on every restart and nothing behind it was ever processed (a poison pill). The
    parser checks the attribute against the payload instead (``bad_attribute``,
    ``attribute_mismatch`` dead letters) and ``AddEventTimestamps`` stamps each event with its
    payload's event time.
    """
    if r.subscription is None:
        raw = p | "ReadPrices" >> ReadPriceFiles(r.specs, reshuffle=not _is_direct(p))
        return raw | "ParseEvents" >> ParseEvents({s.origin: s for s in r.specs}, default_mic,
                                                  r.limits)
    from apache_beam.io.gcp.pubsub import ReadFromPubSub

    from transforms import pubsub_ack
    from transforms.messages import ParseMessages

    if _is_direct(p):
        # Beam's DirectRunner acknowledges each message as soon as it is pulled, so a process
        # killed before the write lost it (issue 13). This evaluator acknowledges a message only
        # after the sinks wrote what it became (or the deduplication dropped it as a repeat).
        pubsub_ack.install_direct_read(r.max_in_flight)
    else:
        # Dataflow keeps ReadFromPubSub: its source acknowledges a message only after the bundle
        # that read it is durably committed, which is already at least once.
        pubsub_ack.uninstall_direct_read()
    messages = p | "ReadPrices" >> ReadFromPubSub(
        subscription=r.subscription, with_attributes=True)
    return messages | "ParseEvents" >> ParseMessages(r.subscription, r.limits)


def _validate(events, r: _Resolved, allowed_lateness_seconds: float):
    """The ``ValidateEvents`` step chosen by ``--validation``.

    Returns:
        ``(ValidationResult-like (events, dead_letters), quality)``: ``quality`` is a list with
        the ``QualityResult`` PCollection (suite) or empty (basic, off); the analytics store
        and BigQuery get it (table ``quality_results``), the serving store does not.
    """
    if r.validation == "suite":
        from quality.stream import ValidateWithSuite

        out = events | "ValidateEvents" >> ValidateWithSuite(
            "price_events", run_id=r.run_id, window_seconds=r.quality_window_seconds,
            batch_size=r.validation_batch_size,
            allowed_lateness_seconds=0.0 if r.bounded else allowed_lateness_seconds)
        return out, [out.results]
    if r.validation == "basic":
        return events | "ValidateEvents" >> ValidateEvents(), []
    from transforms.validation import ValidationResult

    empty = events.pipeline | "NoValidationDeadLetters" >> beam.Create([])
    return ValidationResult(events, empty), []


def build_pipeline(p: beam.Pipeline, r: _Resolved, *, write_batch_size: int = 5000,
                   default_mic: str = "XNYS", min_batch: int = 32, max_batch: int = 1024,
                   max_batch_duration_secs: int | None = None,
                   allowed_lateness_seconds: float = 60.0, idle_seconds: float = 5.0,
                   dedup_horizon_seconds: float = 3 * 24 * 3600,
                   freshness_minutes: float | None = None) -> None:
    """Add the price pipeline's steps to ``p`` (see the module docstring for the graph)."""
    parsed = _read(p, r, default_mic)
    valid, quality = _validate(parsed.events, r, allowed_lateness_seconds)
    deduplicated = valid.events | "DeduplicateEvents" >> DeduplicateEvents(
        bounded=r.bounded, horizon_seconds=int(dedup_horizon_seconds),
        origin_order={s.origin: i for i, s in enumerate(r.specs)})
    unique = deduplicated.events
    timed = unique | "AddEventTimestamps" >> beam.Map(
        lambda e: TimestampedValue(e, e.event_time.timestamp()))
    daily = timed | "SelectDailyBars" >> beam.Filter(lambda e: e.interval == "1d")
    outputs = [unique, parsed.dead_letters, valid.dead_letters]
    if not r.bounded:
        from transforms.alerts import DetectPriceCrossings
        from transforms.bars import AggregateTrades

        trades = timed | "SelectTrades" >> beam.Filter(lambda e: e.interval == "tick")
        bars = trades | "AggregateTrades" >> AggregateTrades(
            allowed_lateness_seconds, idle_seconds, default_mic, warm_store=r.store)
        crossings = trades | "DetectPriceCrossings" >> DetectPriceCrossings(r.rules)
        if freshness_minutes != 0:  # stale_feed system alerts go where market alerts go
            from transforms.freshness import MonitorFreshness

            stale = timed | "MonitorFreshness" >> MonitorFreshness(
                freshness_minutes, default_mic=default_mic)
            crossings = (crossings, stale) | "MergeStreamAlerts" >> beam.Flatten()
        daily = (daily, bars.session_bars) | "MergeDailyBars" >> beam.Flatten()
        outputs += [bars.minute_bars, bars.session_bars, bars.provisional, crossings]
    ordered = daily | "ComputeFeatures" >> ComputeFeatures(
        r.source_priority, r.rules, r.window, bounded=r.bounded, default_mic=default_mic,
        warm_store=None if r.bounded else r.store)
    outputs += [ordered.flags, ordered.alerts, ordered.instruments]
    alerts = [ordered.alerts] + ([crossings] if not r.bounded else [])
    if r.model_uri is not None:
        from transforms.inference import PredictNextReturn

        inferred = ordered.windows | "PredictNextReturn" >> PredictNextReturn(
            r.model_uri, r.model_name, r.model_version or "", min_batch, max_batch,
            max_batch_duration_secs=max_batch_duration_secs, model_dir=r.model_dir,
            watch_interval_seconds=r.watch_interval_seconds, vertex=r.vertex,
            fallback_to_local=r.vertex_fallback, challenger_uri=r.challenger_uri,
            challenger_share=r.challenger_share)
        champion = inferred.predictions
        if r.challenger_uri is not None:  # alerts follow "the" prediction, not the challenger's
            champion = champion | "SelectChampionPredictions" >> beam.Filter(
                lambda pr: pr.role == "champion")
        predicted_alerts = champion | "ComputePredictedMoveAlerts" >> \
            ComputePredictedMoveAlerts(r.rules)
        outputs += [inferred.predictions, inferred.dead_letters, predicted_alerts]
        alerts.append(predicted_alerts)
        if not r.bounded:
            # Scores each prediction when its target session's bar arrives (state bounded by a
            # horizon); bounded runs leave this to the batch job `miraikakaku track` (15 s on
            # the demo's store, against minutes for the same join inside the run). Predictions
            # that never meet their bar are counted (TrackPredictions:unmatched:*), not stored:
            # the predictions themselves are already stored.
            from transforms.tracking import TrackPredictions

            tracked = (inferred.predictions, daily) | "TrackPredictions" >> TrackPredictions(
                grace_seconds=TRACKING_GRACE_SECONDS)
            outputs.append(tracked.performance)
    records = tuple(outputs) | "FlattenRecords" >> beam.Flatten()
    # the serving store also keeps superseded revisions (corrections) as history
    stored = (records, deduplicated.revisions) | "FlattenStoreRecords" >> beam.Flatten()
    if r.store.kind == "sqlite":
        stored | "WriteToServingStore" >> WriteToServingStore(
            r.store.path, r.source_priority, max_batch_size=write_batch_size)
    else:
        from transforms.sinks import WriteToBigtableStore

        stored | "WriteToServingStore" >> WriteToBigtableStore(r.store)
    if r.bq_table_prefix or r.analytics_dir:
        # analytics (BigQuery, the embedded store) also get each window's last feature vector
        from transforms.features import FeatureVector

        features = ordered.windows | "SelectFeatureVectors" >> beam.Map(FeatureVector.from_window)
    if r.bq_table_prefix:
        from stores.bigquery import WriteRecordsToBigQuery

        project, dataset = r.bq_table_prefix.split(":", 1)
        ((records, features, *quality) | "FlattenBigQueryRecords" >> beam.Flatten()
         | "WriteToBigQuery" >> WriteRecordsToBigQuery(project, dataset))
    if r.analytics_dir:
        from analytics.sink import WriteToAnalyticsStore

        # the rows BigQuery gets (to_bq_row)
        ((records, features, *quality) | "FlattenAnalyticsRecords" >> beam.Flatten()
         | "WriteToAnalyticsStore" >> WriteToAnalyticsStore(r.analytics_dir))
    if r.alerts_topic:
        from transforms.sinks import PublishAlerts

        (tuple(alerts) | "FlattenAlerts" >> beam.Flatten()
         | "PublishAlerts" >> PublishAlerts(r.alerts_topic))
    if r.prices_topic or r.predictions_topic:
        from transforms.sinks import PublishEvents

        # the notifier's events in Google Cloud mode: what the embedded store's outbox gets
        if r.prices_topic:
            (records | "SelectPriceEvents" >> beam.Filter(_is_price_event)
             | "PublishPrices" >> PublishEvents(r.prices_topic))
        if r.predictions_topic:
            (records | "SelectPredictions" >> beam.Filter(_is_prediction)
             | "PublishPredictions" >> PublishEvents(r.predictions_topic))
    if r.dead_letter_topic:
        from transforms.sinks import PublishDeadLetters

        ((parsed.dead_letters, valid.dead_letters) | "FlattenDeadLetters" >> beam.Flatten()
         | "PublishDeadLetters" >> PublishDeadLetters(r.dead_letter_topic))


def _is_price_event(record) -> bool:
    from miraikakaku.schema import PriceEvent

    return isinstance(record, PriceEvent)


def _is_prediction(record) -> bool:
    from miraikakaku.schema import Prediction

    return isinstance(record, Prediction)


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
        bars_stored=get(w, "PriceEvent") - get("AggregateTrades", "minute_bars")
        - get("AggregateTrades", "session_bars") - get("AggregateTrades", "provisional_bars")
        - get("DeduplicateEvents", "rewrites"),
        derived_bars=get("AggregateTrades", "minute_bars") + get("AggregateTrades", "session_bars"),
        flagged_bars=get(w, "flagged_bars"),
        duplicates=get("DeduplicateEvents", "duplicates")
        + get("DeduplicateEvents", "streaming_in") - get("DeduplicateEvents", "streaming_out"),
        conflicting_duplicates=get("DeduplicateEvents", "conflicting_duplicates"),
        parse_dead_letters=sum(v for k, v in dead.items()
                               if k.startswith(("ParseEvents:", "ParseMessages:"))),
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
        analytics_rows=sum(v for k, v in counters.items()
                           if k[0] == "WriteToAnalyticsStore" and k[1].startswith("rows:")),
        analytics_dir=r.analytics_dir or "",
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


@dataclasses.dataclass
class StreamingRun:
    """A running pipeline: a streaming one (``run(["--subscription", ...])``), or any pipeline
    submitted to a remote runner such as Dataflow.

    Attributes:
        result: Beam's pipeline result (``cancel()`` stops it).
        resolved: the resolved options.
        started: ``time.perf_counter()`` at start.
    """

    result: object
    resolved: _Resolved
    started: float
    _error: BaseException | None = dataclasses.field(default=None, init=False, repr=False)
    _ended: threading.Event = dataclasses.field(default_factory=threading.Event, init=False,
                                                repr=False)

    def __post_init__(self) -> None:
        # the DirectRunner runs the stream in its own threads and reports a failure only to
        # wait_until_finish(), which blocks: a watcher thread waits on it for us
        if isinstance(self.result, DirectPipelineResult):
            threading.Thread(target=self._watch, name="stream-watch", daemon=True).start()

    def _watch(self) -> None:
        try:
            self.result.wait_until_finish()  # type: ignore[attr-defined]
        except BaseException as e:  # noqa: BLE001 - reported by failure()
            self._error = e
        finally:
            self._release_messages()
            self._ended.set()

    def _release_messages(self) -> None:
        # the DirectRunner's Pub/Sub reads (transforms.pubsub_ack): stop the ack threads and
        # give unsettled messages back for immediate redelivery to the next run
        if self.resolved.subscription and isinstance(self.result, DirectPipelineResult):
            from transforms import pubsub_ack

            context = getattr(self.result, "_evaluation_context", None)
            pubsub_ack.close_all(release=True,
                                 owner=id(context) if context is not None else None)

    def failure(self) -> str | None:
        """Why the pipeline stopped (the error, or its terminal state), or None while it runs.

        A cancelled run (``cancel()``) is not a failure.
        """
        if isinstance(self.result, DirectPipelineResult):
            if not self._ended.is_set() or self.result.state == "CANCELLED":
                return None
            return f"{type(self._error).__name__}: {self._error}" if self._error is not None \
                else f"the pipeline ended ({self.result.state})"
        state = str(getattr(self.result, "state", "RUNNING"))
        if state.rsplit(".", 1)[-1] in ("FAILED", "DONE", "DRAINED", "STOPPED", "UPDATED"):
            return f"the pipeline ended ({state})"
        return None

    def _counts(self) -> dict[tuple[str, str], int]:
        # The DirectRunner's metrics for unbounded pipelines stop after the first bundle; its
        # DoFns run in this process, so the local mirror (transforms.progress) is exact there.
        if isinstance(self.result, DirectPipelineResult):
            return progress.counters()
        return _counters(self.result)

    def summary(self) -> RunSummary:
        """Counters so far, as a ``RunSummary`` (``reconciled`` holds once the stream is idle)."""
        return _summarize(self._counts(), self.resolved, time.perf_counter() - self.started)

    def counter(self, namespace: str, name: str) -> int:
        """One counter's current value."""
        return self._counts().get((namespace, name), 0)

    def cancel(self) -> None:
        """Stop the pipeline (on the DirectRunner, unacknowledged Pub/Sub messages are given
        back at once: ``transforms.pubsub_ack.close_all``)."""
        self.result.cancel()
        self._release_messages()


def _cache_dofn_specs() -> None:
    """Speed up the DirectRunner's streaming mode about 2x: cache DoFn state/timer specs.

    For every bundle of every ParDo, the DirectRunner rebuilds the DoFn's signature and calls
    ``userstate.get_dofn_specs``, which inspects method signatures. Its Pub/Sub source makes
    10-message bundles, so that inspection took 55 % of the executor's samples in a profiled
    3,000-message run. The specs are class attributes (the ``StateParam``/``TimerParam``
    defaults of ``process`` and the ``on_timer`` methods), so they are cached per DoFn class.
    Only applied for streaming runs on the DirectRunner; Dataflow does not use this code.
    """
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.transforms import userstate

    if getattr(userstate.get_dofn_specs, "cached_per_class", False):
        return
    original = userstate.get_dofn_specs
    cache: dict[type, tuple] = {}

    def get_dofn_specs(dofn):
        specs = cache.get(type(dofn))
        if specs is None:
            specs = cache[type(dofn)] = original(dofn)
        return specs

    get_dofn_specs.cached_per_class = True  # type: ignore[attr-defined]
    userstate.get_dofn_specs = get_dofn_specs
    transform_evaluator.get_dofn_specs = get_dofn_specs


def _is_direct(p: beam.Pipeline) -> bool:
    return p.runner.__class__.__name__ in ("SwitchingDirectRunner", "DirectRunner",
                                           "BundleBasedDirectRunner", "FnApiRunner")


def _start_streaming(p: beam.Pipeline, r: _Resolved) -> StreamingRun:
    if _is_direct(p):
        _cache_dofn_specs()
    progress.reset()
    started = time.perf_counter()
    return StreamingRun(p.run(), r, started)


def run(argv: Sequence[str] | None = None, *, settings: Settings | None = None,
        show_progress: bool = False, test_pipeline: beam.Pipeline | None = None
        ) -> RunSummary | StreamingRun:
    """Validate options, build the pipeline, run it to completion and summarize.

    With ``--subscription`` the pipeline is unbounded: ``run`` starts it and returns a
    ``StreamingRun`` handle at once (the CLI waits on it until interrupted).

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
    if r.bq_table_prefix or r.analytics_dir:  # one ingested_at for this run's analytics rows
        from stores.bigquery import start_ingest

        start_ingest()
    po = opts.view_as(PriceOptions)
    p = test_pipeline or beam.Pipeline(options=opts)
    build_pipeline(p, r, write_batch_size=po.write_batch_size, default_mic=po.default_mic,
                   min_batch=po.inference_min_batch_size, max_batch=po.inference_max_batch_size,
                   max_batch_duration_secs=po.inference_max_batch_duration_secs,
                   allowed_lateness_seconds=po.allowed_lateness_seconds,
                   idle_seconds=po.idle_seconds, dedup_horizon_seconds=po.dedup_horizon_seconds,
                   freshness_minutes=po.freshness_minutes)
    if r.store.kind == "sqlite":
        Path(r.store.path).parent.mkdir(parents=True, exist_ok=True)
        r.store.open().close()
    if not r.bounded or not _is_direct(p):
        # unbounded input, or a remote runner (Dataflow: the flex-template launcher must exit
        # after submitting): return a handle at once and let the caller decide whether to wait
        return _start_streaming(p, r)
    total = _count_lines(r.specs) if show_progress else None
    t0 = time.perf_counter()
    with _LiveProgress(total, r.model_uri is not None, show_progress):
        result = p.run()
        result.wait_until_finish()
    counts = _counters(result)
    # With a Pub/Sub sink in the graph (--alerts_topic, --prices_topic, ...) the DirectRunner
    # runs the bundle-based runner, whose metrics lose the sink steps' counters (bars_stored
    # read 0 with 112 bars stored); its DoFns ran in this process, so the local mirror has them.
    for key, value in progress.counters().items():
        counts[key] = max(counts.get(key, 0), value)
    summary = _summarize(counts, r, time.perf_counter() - t0)
    runs = settings.data_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (runs / f"{stamp}.json").write_text(json.dumps(summary.to_dict(), indent=2))
    return summary
