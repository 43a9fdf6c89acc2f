"""Beam job: real price files → time-split TFRecords of sequence examples for ImportExampleGen.

TFX Transform works row by row and cannot build sequences, so the LSTM windows are built here,
by the stream's own code: files are read inside the pipeline (``transforms.parsing.ReadPriceFiles``
+ ``ParseEvents``), validated with the stream's quality suite (``quality.stream
.ValidateWithSuite``: the events it blocks are dead-lettered and counted as ``blocked``, so
training sees exactly what the stream stores), grouped per instrument and fed through
``models.training.sequence_examples``, i.e. one ``transforms.ordering.InstrumentSequencer`` per
instrument, exactly as ``ComputeFeatures`` does in the stream (training/serving parity, tested in
``tests/tfx``). Memory is bounded by one instrument's history per worker.

Output layout (``examples_dir``)::

    train/part-*.tfrecord.gz   as_of_date < cutoff and target_date <= cutoff (no look-ahead)
    eval/part-*.tfrecord.gz    as_of_date > cutoff
    dead_letters/part-*.jsonl  parse/validation dead letters, non-daily events
    manifest.json              counts and the cutoff (``ExamplesResult``)

Each record is a ``tf.train.Example`` with ``windows`` (float list, N*F, row-major
``[N, F]``), ``label`` (float, ln(P_{t+1}/P_t)), ``last_price`` (float, quote currency),
``as_of_date``, ``target_date`` and ``instrument_id`` (bytes); keys in ``tfx_pipelines.features``.
Run it alone with ``python -m tfx_pipelines.examples OUT_DIR [FILE ...]``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import json
import math
import sys
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from models.training import ExampleRow, sequence_examples
from quality.stream import ValidateWithSuite
from tfx_pipelines import features as fk
from transforms.ordering import event_sort_key
from transforms.parsing import ParseEvents, ReadPriceFiles, file_spec

__all__ = [
    "BuildSequenceExamples",
    "ExamplesResult",
    "SplitByTime",
    "build_examples_pipeline",
    "example_to_row",
    "instrument_in_sample",
    "quantile_cutoff",
    "row_to_example",
    "run",
    "write_examples",
]

_NS = "tfx_examples"
TRAIN, EVAL = "train", "eval"


def row_to_example(row: ExampleRow):
    """Serialize an ``ExampleRow`` as a ``tf.train.Example`` (keys: ``tfx_pipelines.features``).

    Returns:
        The serialized proto (bytes).
    """
    import tensorflow as tf

    feat = tf.train.Feature
    window = np.asarray(row.window, dtype=np.float32).reshape(-1)
    return tf.train.Example(features=tf.train.Features(feature={
        fk.WINDOWS_KEY: feat(float_list=tf.train.FloatList(value=window.tolist())),
        fk.LABEL_KEY: feat(float_list=tf.train.FloatList(value=[row.label])),
        fk.LAST_PRICE_KEY: feat(float_list=tf.train.FloatList(value=[row.last_price])),
        fk.AS_OF_DATE_KEY: feat(bytes_list=tf.train.BytesList(
            value=[row.as_of_date.isoformat().encode()])),
        fk.TARGET_DATE_KEY: feat(bytes_list=tf.train.BytesList(
            value=[row.target_date.isoformat().encode()])),
        fk.INSTRUMENT_KEY: feat(bytes_list=tf.train.BytesList(
            value=[row.instrument_id.encode()])),
    })).SerializeToString()


def example_to_row(serialized: bytes, window: int = fk.DEFAULT_WINDOW) -> ExampleRow:
    """Parse a record written by ``row_to_example`` back (tests, inspection).

    Note that ``label`` and ``last_price`` come back rounded to float32.

    Raises:
        ValueError: if the windows field does not hold ``window * N_FEATURES`` values.
    """
    import tensorflow as tf

    ex = tf.train.Example.FromString(serialized)
    f = ex.features.feature
    values = np.asarray(f[fk.WINDOWS_KEY].float_list.value, dtype=np.float32)
    if values.size != window * fk.N_FEATURES:
        raise ValueError(f"windows has {values.size} values, expected {window * fk.N_FEATURES}")
    return ExampleRow(
        f[fk.INSTRUMENT_KEY].bytes_list.value[0].decode(),
        values.reshape(window, fk.N_FEATURES),
        float(f[fk.LABEL_KEY].float_list.value[0]),
        dt.date.fromisoformat(f[fk.AS_OF_DATE_KEY].bytes_list.value[0].decode()),
        dt.date.fromisoformat(f[fk.TARGET_DATE_KEY].bytes_list.value[0].decode()),
        float(f[fk.LAST_PRICE_KEY].float_list.value[0]))


class _SequenceInstrumentFn(beam.DoFn):
    """``(instrument_id, Iterable[PriceEvent])`` → ``ExampleRow``s of that instrument."""

    def __init__(self, source_priority: Sequence[str], window: int) -> None:
        self._priority = list(source_priority)
        self._window = window
        self._counters: dict[str, object] = {}

    def setup(self) -> None:
        from miraikakaku.instruments import load_master

        self._master = load_master()

    def _inc(self, name: str, n: int) -> None:
        if n:
            if name not in self._counters:
                self._counters[name] = Metrics.counter(_NS, name)
            self._counters[name].inc(n)  # type: ignore[attr-defined]

    def process(self, element):
        _, events = element
        rank = {s: i for i, s in enumerate(self._priority)}
        # Same order as models.training.build_examples; the payload breaks exact ties so a
        # duplicate event_id keeps a deterministic one (the files never repeat an id with
        # different values in the default inputs; repeats are counted either way).
        ordered = sorted(events, key=lambda e: (event_sort_key(rank)(e), repr(e)))
        unique, seen = [], set()
        for e in ordered:
            if e.event_id in seen:
                self._inc("duplicates", 1)
                continue
            seen.add(e.event_id)
            unique.append(e)
        stats: collections.Counter = collections.Counter()
        first = unique[0]
        cal = self._master.of_event(first.instrument_id, first.symbol, first.session_date).calendar
        n = 0
        for row in sequence_examples(unique, cal, self._priority, self._window, stats):
            n += 1
            yield row
        stats["examples"] += n
        stats["instruments"] += 1
        stats["events"] += len(unique)
        for name, value in stats.items():
            self._inc(name, value)


class BuildSequenceExamples(beam.PTransform):
    """``PCollection[PriceEvent]`` (daily, validated) → ``PCollection[ExampleRow]``.

    Groups by instrument (one instrument's history per worker), drops repeated ``event_id``s
    (counted as ``duplicates``) and runs ``models.training.sequence_examples``.

    Args:
        source_priority: source names, best first.
        window: LSTM timesteps N.
    """

    def __init__(self, source_priority: Sequence[str], window: int = fk.DEFAULT_WINDOW) -> None:
        super().__init__()
        self._priority = list(source_priority)
        self._window = window

    def expand(self, events):
        return (events
                | "KeyByInstrument" >> beam.Map(lambda e: (e.instrument_id, e))
                | "GroupByInstrument" >> beam.GroupByKey()
                | "SequenceInstrument" >> beam.ParDo(
                    _SequenceInstrumentFn(self._priority, self._window)))


def instrument_in_sample(instrument_id: str, fraction: float) -> bool:
    """Stable instrument sample: crc32(instrument_id) / 2**32 < ``fraction``.

    Raises:
        ValueError: if ``fraction`` is not in (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"instrument fraction must be in (0, 1], got {fraction}")
    return zlib.crc32(instrument_id.encode()) / 2**32 < fraction


def quantile_cutoff(date_counts: Iterable[tuple[int, int]], validation_fraction: float
                    ) -> dt.date:
    """The ``1 - validation_fraction`` quantile (numpy ``method="lower"``) of as-of dates.

    Equals ``models.training.split_by_date``'s default cutoff on the same examples.

    Args:
        date_counts: ``(date ordinal, number of examples)`` pairs.
        validation_fraction: in (0, 1).

    Returns:
        The cutoff date.

    Raises:
        ValueError: if there are no dates or the fraction is outside (0, 1).
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    pairs = sorted(date_counts)
    total = sum(c for _, c in pairs)
    if total == 0:
        raise ValueError("no examples: cannot choose a cutoff date")
    index = math.floor((1.0 - validation_fraction) * (total - 1))  # numpy "lower"
    seen = 0
    for ordinal, count in pairs:
        seen += count
        if seen > index:
            return dt.date.fromordinal(ordinal)
    raise AssertionError("unreachable")


class SplitByTime(beam.PTransform):
    """``PCollection[ExampleRow]`` → ``(train, eval, cutoff)`` without look-ahead.

    Train: ``as_of_date < cutoff`` and ``target_date <= cutoff``; eval: ``as_of_date > cutoff``
    (``models.training.split_by_date``'s rule); examples on the cutoff or whose target crosses it
    are counted (``straddling_cutoff``) and left out. ``cutoff`` is a singleton
    ``PCollection[date]``: the given date, or ``quantile_cutoff`` of the examples.
    """

    def __init__(self, cutoff: dt.date | None = None, validation_fraction: float = 0.15) -> None:
        super().__init__()
        self._cutoff = cutoff
        self._fraction = validation_fraction

    def expand(self, rows):
        if self._cutoff is not None:
            cutoff = rows.pipeline | "Cutoff" >> beam.Create([self._cutoff])
        else:
            fraction = self._fraction
            cutoff = (rows
                      | "AsOfOrdinal" >> beam.Map(lambda r: r.as_of_date.toordinal())
                      | "CountPerDate" >> beam.combiners.Count.PerElement()
                      | "DateHistogram" >> beam.combiners.ToList()
                      | "Cutoff" >> beam.Map(quantile_cutoff, fraction))
        straddling = Metrics.counter(_NS, "straddling_cutoff")

        def which(row: ExampleRow, n: int, cut: dt.date) -> int:
            if row.as_of_date < cut and row.target_date <= cut:
                return 0
            if row.as_of_date > cut:
                return 1
            straddling.inc()
            return 2

        train, evaluation, _ = rows | "PartitionByCutoff" >> beam.Partition(
            which, 3, beam.pvalue.AsSingleton(cutoff))
        return train, evaluation, cutoff


def _dead_letter_json(d) -> str:
    return json.dumps(dataclasses.asdict(d), default=str, sort_keys=True)


_QUALITY_BATCH = 5000
"""Events per GX validation call (every in-stream rule is row-level, so the batch size changes
the speed, not the result)."""


def build_examples_pipeline(p: beam.Pipeline, paths: Sequence[str | Path], examples_dir: str,
                            source_priority: Sequence[str], window: int = fk.DEFAULT_WINDOW,
                            cutoff: dt.date | None = None, validation_fraction: float = 0.15,
                            instrument_fraction: float = 1.0) -> None:
    """Add the examples job to ``p`` (see the module docstring for the output layout).

    Args:
        p: the pipeline.
        paths: price files in ``transforms.parsing`` format (local or ``gs://``).
        examples_dir: output directory.
        source_priority: source names, best first.
        window: LSTM timesteps N.
        cutoff: split date; None: the ``1 - validation_fraction`` date quantile.
        validation_fraction: see ``SplitByTime``.
        instrument_fraction: keep only this share of instruments (``instrument_in_sample``);
            the other instruments' events are counted (``events_of_unsampled_instruments``).

    Raises:
        FileNotFoundError: if an input file does not exist (from ``file_spec``).
    """
    specs = [file_spec(x) for x in paths]
    parsed = (p | "ReadPriceFiles" >> ReadPriceFiles(specs)
              | "ParseEvents" >> ParseEvents({s.origin: s for s in specs}))
    valid = parsed.events | "ValidateEvents" >> ValidateWithSuite(
        "price_events", run_id="tfx_examples", batch_size=_QUALITY_BATCH)
    not_daily = Metrics.counter(_NS, "not_daily")

    def route_interval(event):
        if event.interval == "1d":
            yield event
        else:
            not_daily.inc()
            from miraikakaku.schema import DeadLetter

            yield beam.pvalue.TaggedOutput("dead_letter", DeadLetter(
                "BuildSequenceExamples", "not_daily", f"interval {event.interval}",
                event.to_json(), event.source, event.event_time))

    daily = valid.events | "KeepDaily" >> beam.FlatMap(route_interval).with_outputs(
        "dead_letter", main="daily")
    events = daily.daily
    if instrument_fraction < 1.0:
        sampled_out = Metrics.counter(_NS, "events_of_unsampled_instruments")

        def sampled(event) -> bool:
            keep = instrument_in_sample(event.instrument_id, instrument_fraction)
            if not keep:
                sampled_out.inc()
            return keep

        events = events | "SampleInstruments" >> beam.Filter(sampled)
    rows = events | "BuildSequenceExamples" >> BuildSequenceExamples(source_priority, window)
    train, evaluation, cut = rows | "SplitByTime" >> SplitByTime(cutoff, validation_fraction)
    for name, split in ((TRAIN, train), (EVAL, evaluation)):
        (split
         | f"Serialize[{name}]" >> beam.Map(row_to_example)
         | f"Write[{name}]" >> beam.io.WriteToTFRecord(
             f"{examples_dir}/{name}/part", file_name_suffix=".tfrecord.gz"))
    ((parsed.dead_letters, valid.dead_letters, daily.dead_letter)
     | "FlattenDeadLetters" >> beam.Flatten()
     | "DeadLetterJson" >> beam.Map(_dead_letter_json)
     | "WriteDeadLetters" >> beam.io.WriteToText(f"{examples_dir}/dead_letters/part",
                                                  file_name_suffix=".jsonl"))
    (cut | "CutoffText" >> beam.Map(lambda d: d.isoformat())
     | "WriteCutoff" >> beam.io.WriteToText(f"{examples_dir}/cutoff", shard_name_template=""))


@dataclasses.dataclass(frozen=True)
class ExamplesResult:
    """What ``write_examples`` produced.

    Attributes:
        examples_dir: the output directory (``train/``, ``eval/`` inside).
        cutoff: the split date.
        counts: ``events_read`` (records), ``parse_dead_letters``, ``blocked``, ``not_daily``,
            ``duplicates``, ``events``, ``instruments``, ``feature_bars``, ``windows``,
            ``broken_targets``, ``windows_without_next_bar``, ``examples``, ``train``, ``eval``,
            ``straddling_cutoff``.
        seconds: wall time of the Beam job.
    """

    examples_dir: str
    cutoff: dt.date
    counts: dict[str, int]
    seconds: float

    def to_json(self) -> dict:
        """JSON-ready dict (the content of ``manifest.json``)."""
        return {"examples_dir": self.examples_dir, "cutoff": self.cutoff.isoformat(),
                "counts": self.counts, "seconds": round(self.seconds, 2)}


def _count_records(pattern: str) -> int:
    import tensorflow as tf

    files = tf.io.gfile.glob(pattern)
    return sum(1 for f in files for _ in tf.data.TFRecordDataset(f, compression_type="GZIP"))


def write_examples(paths: Sequence[str | Path], examples_dir: str | Path,
                   source_priority: Sequence[str], *, window: int = fk.DEFAULT_WINDOW,
                   cutoff: dt.date | str | None = None, validation_fraction: float = 0.15,
                   instrument_fraction: float = 1.0,
                   beam_args: Sequence[str] | None = None) -> ExamplesResult:
    """Run the examples job (DirectRunner unless ``beam_args`` say otherwise) and wait.

    Args:
        paths: price files.
        examples_dir: output directory; existing ``train/``/``eval/`` shards are overwritten.
        source_priority: source names, best first.
        window: LSTM timesteps N.
        cutoff: split date (``date`` or ISO text); None: the date quantile.
        validation_fraction: see ``SplitByTime``.
        instrument_fraction: share of instruments to keep (stable by hash); 1 keeps all.
        beam_args: Beam pipeline options; default ``--direct_num_workers=1``.

    Returns:
        ``ExamplesResult``; also written as ``manifest.json``.

    Raises:
        FileNotFoundError: if an input file does not exist.
        ValueError: if no example lands on either side of the split.
    """
    import time

    import tensorflow as tf

    examples_dir = str(examples_dir)
    for sub in (TRAIN, EVAL, "dead_letters"):
        d = f"{examples_dir}/{sub}"
        if tf.io.gfile.exists(d):
            tf.io.gfile.rmtree(d)
    cut = dt.date.fromisoformat(cutoff) if isinstance(cutoff, str) else cutoff
    t0 = time.perf_counter()
    opts = PipelineOptions(list(beam_args or ["--direct_num_workers=1"]))
    p = beam.Pipeline(options=opts)
    build_examples_pipeline(p, paths, examples_dir, source_priority, window, cut,
                            validation_fraction, instrument_fraction)
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - t0
    counts: dict[str, int] = collections.Counter()
    for c in result.metrics().query(MetricsFilter())["counters"]:
        ns, name = c.key.metric.namespace, c.key.metric.name
        if ns == _NS:
            counts[name] += c.committed
        elif (ns, name) == ("ParseEvents", "events_read"):
            counts["events_read"] += c.committed
        elif (ns, name) == ("ParseEvents", "parse_errors"):
            counts["parse_dead_letters"] += c.committed
        elif (ns, name) == ("ValidateEvents", "blocked"):
            counts["blocked"] += c.committed
    counts["train"] = _count_records(f"{examples_dir}/{TRAIN}/*")
    counts["eval"] = _count_records(f"{examples_dir}/{EVAL}/*")
    with tf.io.gfile.GFile(f"{examples_dir}/cutoff") as f:
        cut_date = dt.date.fromisoformat(f.read().strip())
    out = ExamplesResult(examples_dir, cut_date, dict(counts), seconds)
    if not counts["train"] or not counts["eval"]:
        raise ValueError(f"cutoff {cut_date} leaves {counts['train']} training and "
                         f"{counts['eval']} eval examples")
    with tf.io.gfile.GFile(f"{examples_dir}/manifest.json", "w") as f:
        f.write(json.dumps(out.to_json(), indent=2) + "\n")
    return out


def run(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m tfx_pipelines.examples OUT_DIR [FILE ...]``."""
    from miraikakaku.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m tfx_pipelines.examples")
    parser.add_argument("out_dir")
    parser.add_argument("paths", nargs="*", help="default: Settings().default_inputs")
    parser.add_argument("--cutoff")
    parser.add_argument("--window", type=int, default=fk.DEFAULT_WINDOW)
    parser.add_argument("--instrument-fraction", type=float, default=1.0)
    args, beam_args = parser.parse_known_args(argv)
    settings = get_settings()
    res = write_examples(args.paths or settings.default_inputs, args.out_dir,
                         settings.source_priority, window=args.window, cutoff=args.cutoff,
                         instrument_fraction=args.instrument_fraction,
                         beam_args=beam_args or None)
    print(json.dumps(res.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run())
