"""Run the TFX pipeline on this machine: ``LocalDagRunner`` with a sqlite ML Metadata store.

``run()`` (what ``miraikakaku train --tfx`` calls) first builds the sequence examples
(``tfx_pipelines.examples``, Beam DirectRunner) under ``Settings().data_dir/tfx/examples``, then
runs ``pipeline.create_pipeline`` with the metadata store ``data_dir/tfx/metadata.sqlite`` and the
pipeline root ``data_dir/tfx/pipelines/<name>``; a blessed model lands as the next version of
``Settings().model_dir``, where the stream's loader (``models.registry.latest_version``) finds
it. Progress (components started/finished) is shown with rich; the result is a ``TfxRunSummary``
read back from ML Metadata. Also ``python -m tfx_pipelines.local_runner [FILE ...]``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfx_pipelines import configs

__all__ = ["TfxRunSummary", "metadata_config", "read_run_summary", "run", "run_pipeline"]

N_NODES = 9


@dataclasses.dataclass
class TfxRunSummary:
    """What a pipeline run decided, read from ML Metadata.

    Attributes:
        blessed: the Evaluator blessed the candidate.
        pushed: the Pusher pushed it (only if blessed).
        pushed_version, pushed_path: the registry version and directory, when pushed.
        had_champion: a previously blessed model was compared against.
        gate_failures: thresholds the candidate failed (``metrics.read_gate_failures``).
        evaluator_metrics: overall-slice TFMA metrics of the eval split (``champion_*`` for the
            champion): ``root_mean_squared_error``, ``mean_absolute_error``,
            ``directional_accuracy``, ``last_value_rmse``, ``rmse_skill_vs_last_value``,
            ``example_count`` (log-return units).
        trainer_metrics: the trainer's own ``evaluate_forecasts`` on the eval split.
        model_uri, evaluation_uri: artifact directories.
        examples: ``ExamplesResult.to_json()`` of the examples job (None if not run here).
        seconds: wall times (``examples``, ``pipeline``, ``total``).
    """

    blessed: bool
    pushed: bool
    pushed_version: str | None
    pushed_path: str | None
    had_champion: bool
    gate_failures: list[str]
    evaluator_metrics: dict[str, float]
    trainer_metrics: dict[str, Any]
    model_uri: str | None
    evaluation_uri: str | None
    examples: dict | None = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


def metadata_config(path: str | Path):
    """ML Metadata connection config for a sqlite file (created on first use)."""
    from tfx import v1 as tfx

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(str(path))


def _latest(store, type_name: str, since_ms: int):
    arts = [a for a in store.get_artifacts_by_type(type_name)
            if a.create_time_since_epoch >= since_ms]
    return max(arts, key=lambda a: a.id) if arts else None


def _prop(artifact, name: str):
    if artifact is None or name not in artifact.custom_properties:
        return None
    v = artifact.custom_properties[name]
    return v.int_value if v.HasField("int_value") else v.string_value


def read_run_summary(metadata_path: str | Path, since: dt.datetime | None = None
                     ) -> TfxRunSummary:
    """The blessing, push and metrics of the newest run in a local metadata store.

    Args:
        metadata_path: the sqlite file.
        since: only artifacts created at or after this time (UTC) count; None: any.

    Returns:
        The summary; ``blessed``/``pushed`` are False when no such artifact exists (e.g. the
        Evaluator failed).
    """
    from ml_metadata.metadata_store import metadata_store

    from tfx_pipelines.metrics import read_evaluation, read_gate_failures

    store = metadata_store.MetadataStore(metadata_config(metadata_path))
    since_ms = int(since.timestamp() * 1000) if since else 0
    blessing = _latest(store, "ModelBlessing", since_ms)
    evaluation = _latest(store, "ModelEvaluation", since_ms)
    pushed = _latest(store, "PushedModel", since_ms)
    model = _latest(store, "Model", since_ms)
    ev_metrics = read_evaluation(evaluation.uri) if evaluation is not None else {}
    trainer_metrics: dict[str, Any] = {}
    if model is not None:
        meta = Path(model.uri) / "Format-Serving" / "miraikakaku_model.json"
        if meta.exists():
            trainer_metrics = json.loads(meta.read_text())["validation_metrics"]
    return TfxRunSummary(
        blessed=_prop(blessing, "blessed") == 1,
        pushed=_prop(pushed, "pushed") == 1,
        pushed_version=_prop(pushed, "pushed_version") or None,
        pushed_path=_prop(pushed, "pushed_destination") or None,
        had_champion=bool(_prop(blessing, "baseline_model")),
        gate_failures=read_gate_failures(evaluation.uri) if evaluation is not None else [],
        evaluator_metrics=ev_metrics,
        trainer_metrics=trainer_metrics,
        model_uri=model.uri if model is not None else None,
        evaluation_uri=evaluation.uri if evaluation is not None else None)


class _ComponentProgress(logging.Handler):
    """Turns LocalDagRunner's "Component X is running/finished." log lines into progress."""

    def __init__(self, on_event) -> None:
        super().__init__(logging.INFO)
        self._on_event = on_event

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Component ") and msg.endswith((" is running.", " is finished.")):
            _, node, *_ = msg.split(" ")
            self._on_event(node, msg.endswith("finished."))


def run_pipeline(pipeline, on_component=None) -> None:
    """Run a ``tfx.dsl.Pipeline`` with ``LocalDagRunner``.

    Args:
        pipeline: from ``create_pipeline``.
        on_component: ``f(node_id, finished: bool)`` called as components start and finish.

    Raises:
        RuntimeError: (from TFX) if a component fails.
    """
    from tfx import v1 as tfx

    absl_logger = logging.getLogger("absl")
    saved = (absl_logger.level, absl_logger.propagate, list(absl_logger.handlers))
    handler = _ComponentProgress(on_component or (lambda node, done: None))
    stop = threading.Event()

    def keep_attached() -> None:
        # Components (Transform, Beam) reconfigure absl logging while they run.
        while True:
            if handler not in absl_logger.handlers or absl_logger.level != logging.INFO:
                absl_logger.handlers = [handler]
                absl_logger.setLevel(logging.INFO)
                absl_logger.propagate = False
            if stop.wait(0.2):
                return

    keep_attached_thread = threading.Thread(target=keep_attached, daemon=True)
    absl_logger.handlers = [handler]
    absl_logger.setLevel(logging.INFO)
    absl_logger.propagate = False
    keep_attached_thread.start()
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    finally:
        stop.set()
        keep_attached_thread.join()
        absl_logger.setLevel(saved[0])
        absl_logger.propagate = saved[1]
        absl_logger.handlers = saved[2]


def run(paths: Sequence[str | Path] | None = None, *, settings=None,
        trainer_config: configs.TrainerConfig | None = None,
        gate: configs.GateConfig | None = None, cutoff: dt.date | str | None = None,
        validation_fraction: float = 0.15, instrument_fraction: float = 0.125,
        reuse_examples: bool = False,
        progress: bool = True, pipeline_name: str = configs.PIPELINE_NAME) -> TfxRunSummary:
    """Build examples from real price files and run the TFX pipeline locally.

    Args:
        paths: price files; default ``settings.default_inputs``.
        settings: ``miraikakaku.settings.Settings``; default ``get_settings()``. Everything
            goes under ``settings.data_dir/tfx``; pushed models to ``settings.model_dir``.
        trainer_config: hyperparameters; default ``configs.TrainerConfig()``.
        gate: thresholds; default ``configs.GateConfig()``.
        cutoff: time split date; None: the ``1 - validation_fraction`` date quantile.
        validation_fraction: see ``examples.SplitByTime``.
        instrument_fraction: share of instruments used (stable by hash,
            ``examples.instrument_in_sample``); the default 1/8 keeps a run on 2 cores to minutes
            (all 418 instruments: ~590k examples, ~4 min for the examples job alone).
        reuse_examples: skip the examples job when ``examples/manifest.json`` exists.
        progress: show rich progress and log lines on stderr.
        pipeline_name: name in ML Metadata.

    Returns:
        ``TfxRunSummary`` of this run.

    Raises:
        FileNotFoundError: if an input file does not exist.
        ValueError: if the split leaves a side empty.
        RuntimeError: if a component fails.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from miraikakaku.settings import get_settings
    from tfx_pipelines.examples import write_examples
    from tfx_pipelines.pipeline import create_pipeline

    settings = settings or get_settings()
    trainer_config = trainer_config or configs.TrainerConfig()
    gate = gate or configs.GateConfig()
    paths = [Path(p) for p in (paths or settings.default_inputs)]
    root = Path(settings.data_dir) / "tfx"
    examples_dir = root / "examples"
    console = Console(stderr=True) if progress else None
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                   disable=not progress)
    t0 = time.perf_counter()
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    with bar:
        manifest = examples_dir / "manifest.json"
        if reuse_examples and manifest.exists():
            ex_json = json.loads(manifest.read_text())
            t_ex = 0.0
        else:
            task = bar.add_task("sequence examples (Beam)", total=None)
            ex = write_examples(paths, examples_dir, settings.source_priority,
                                window=trainer_config.window, cutoff=cutoff,
                                validation_fraction=validation_fraction,
                                instrument_fraction=instrument_fraction)
            ex_json = ex.to_json()
            t_ex = time.perf_counter() - t0
            bar.update(task, total=1, completed=1)
        if console:
            c = ex_json["counts"]
            console.log(f"examples: {c.get('train', 0):,} train (as_of < {ex_json['cutoff']}), "
                        f"{c.get('eval', 0):,} eval (as_of > cutoff) from "
                        f"{c.get('events', 0):,} events of {c.get('instruments', 0)} "
                        f"instruments ({c.get('parse_dead_letters', 0)} parse and "
                        f"{c.get('blocked', 0)} validation dead letters, "
                        f"{c.get('duplicates', 0)} duplicates) in {t_ex:.1f} s")
        pipeline = create_pipeline(
            pipeline_name=pipeline_name, pipeline_root=str(root / "pipelines" / pipeline_name),
            examples_dir=str(examples_dir), trainer_config=trainer_config, gate=gate,
            model_dir=str(settings.model_dir), model_name=settings.model_name,
            metadata_connection_config=metadata_config(root / "metadata.sqlite"),
            beam_pipeline_args=configs.BEAM_PIPELINE_ARGS)
        task = bar.add_task("TFX pipeline", total=N_NODES)
        t1 = time.perf_counter()
        done = 0

        def on_component(node: str, finished: bool) -> None:
            nonlocal done
            if finished:
                done += 1
                bar.update(task, completed=done, description=f"TFX pipeline: {node} done")
                if console:
                    console.log(f"{node} finished ({time.perf_counter() - t1:.0f} s)")
            else:
                bar.update(task, description=f"TFX pipeline: {node}")

        run_pipeline(pipeline, on_component)
        t_pipe = time.perf_counter() - t1
    summary = read_run_summary(root / "metadata.sqlite", since=started)
    summary.examples = ex_json
    summary.seconds = {"examples": round(t_ex, 1), "pipeline": round(t_pipe, 1),
                       "total": round(time.perf_counter() - t0, 1)}
    (root / "last_run.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tfx_pipelines.local_runner [FILE ...] [--train-steps N]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfx_pipelines.local_runner")
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--train-steps", type=int, default=configs.TrainerConfig.train_steps)
    parser.add_argument("--cutoff")
    parser.add_argument("--instrument-fraction", type=float, default=0.125)
    args = parser.parse_args(argv)
    s = run(args.paths or None, cutoff=args.cutoff, instrument_fraction=args.instrument_fraction,
            trainer_config=configs.TrainerConfig(train_steps=args.train_steps))
    print(json.dumps(s.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
