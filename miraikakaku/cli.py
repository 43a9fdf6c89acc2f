"""The ``miraikakaku`` command line: ``train``, ``run``, ``serve``, ``demo``, ``track`` (score
stored predictions against realized prices), ``evaluate`` (model quality report), and for Google
Cloud mode (or its emulators) ``init-gcp``, ``publish`` and ``deadletters``; accounts:
``db upgrade`` (migrate the application database), ``users create-admin`` and
``users set-role``; analytics: ``report`` (saved reports over the analytics store); reference
data: ``actions`` (corporate actions from the data, split candidates in a price file).

Every command has ``--help``. ``miraikakaku demo`` is what ``make demo`` runs: it trains a first
model on the real daily prices in ../shared/data, runs the pipeline over them into the embedded
store, prints the summary and says how to start the API.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["main"]


def _quiet_warnings() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def _print_summary(summary) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="MiraiKakaku pipeline run", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value", justify="right")
    t.add_row("inputs", "\n".join(summary.inputs))
    t.add_row("model", summary.model or "(none: --skip_inference)")
    t.add_row("events read", f"{summary.events_read:,}")
    t.add_row("bars stored", f"{summary.bars_stored:,}")
    t.add_row("  of which flagged", f"{summary.flagged_bars:,}")
    t.add_row("duplicates dropped", f"{summary.duplicates:,}"
              + (f" ({summary.conflicting_duplicates:,} conflicting)"
                 if summary.conflicting_duplicates else ""))
    dl = summary.parse_dead_letters + summary.validation_dead_letters
    t.add_row("dead-lettered", f"{dl:,}")
    for reason, n in summary.dead_letters_by_reason.items():
        t.add_row(f"  {reason}", f"{n:,}")
    for flag, n in summary.flags_by_name.items():
        t.add_row(f"flag {flag}", f"{n:,}")
    t.add_row("instruments", f"{summary.instruments:,}")
    t.add_row("LSTM windows", f"{summary.windows:,}")
    t.add_row("predictions", f"{summary.predictions:,}")
    if summary.inference_dead_letters:
        t.add_row("inference dead letters", f"{summary.inference_dead_letters:,}")
    t.add_row("alerts", f"{summary.alerts:,}")
    if summary.late_events:
        t.add_row("late events (stored, not in features)", f"{summary.late_events:,}")
    t.add_row("wall time", f"{summary.wall_seconds:,.1f} s")
    t.add_row("events per second", f"{summary.events_per_second:,.0f}")
    t.add_row("reconciled (read = stored + dead-lettered + duplicates)",
              "[green]yes[/green]" if summary.reconciled else "[red]NO[/red]")
    t.add_row("store", summary.store_path)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(t)


def _cmd_train_tfx(args: argparse.Namespace) -> int:
    """``miraikakaku train --tfx``: the TFX pipeline (LocalDagRunner) on real price files."""
    from tfx_pipelines import configs
    from tfx_pipelines.local_runner import run

    tc = configs.TrainerConfig(units=args.units, train_steps=args.train_steps)
    try:
        s = run(args.input or None, trainer_config=tc, cutoff=args.cutoff,
                instrument_fraction=args.instrument_fraction,
                reuse_examples=args.reuse_examples, progress=True)
    except (FileNotFoundError, ValueError) as e:
        print(f"miraikakaku train --tfx: {e}", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    m, c = s.evaluator_metrics, (s.examples or {}).get("counts", {})
    t = Table(title="MiraiKakaku TFX training run", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value", justify="right")
    t.add_row("examples train / eval", f"{c.get('train', 0):,} / {c.get('eval', 0):,} "
              f"(cutoff {(s.examples or {}).get('cutoff')})")
    t.add_row("instruments / events", f"{c.get('instruments', 0):,} / {c.get('events', 0):,}")

    def num(key: str) -> str:
        return f"{m[key]:.6g}" if key in m else "n/a"

    t.add_row("eval RMSE (log return)", num("root_mean_squared_error"))
    t.add_row("last-value baseline RMSE", num("last_value_rmse"))
    t.add_row("RMSE skill vs last value", num("rmse_skill"))
    t.add_row("eval MAE", num("mean_absolute_error"))
    t.add_row("directional accuracy", num("directional_accuracy"))
    if s.had_champion:
        t.add_row("champion RMSE", num("champion_root_mean_squared_error"))
    t.add_row("blessed", "[green]yes[/green]" if s.blessed else
              "[red]no[/red]: failed " + "; ".join(s.gate_failures))
    t.add_row("pushed", f"version {s.pushed_version} at {s.pushed_path}" if s.pushed else "no")
    t.add_row("wall time", f"{s.seconds.get('total', 0):,.1f} s (examples "
              f"{s.seconds.get('examples', 0):,.1f} s, pipeline "
              f"{s.seconds.get('pipeline', 0):,.1f} s)")
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(t)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if getattr(args, "tfx", False):
        return _cmd_train_tfx(args)
    from models.training import train

    try:
        mv = train(args.input or None, epochs=args.epochs, units=args.units,
                   max_train_examples=args.max_examples, progress=True)
    except (FileNotFoundError, ValueError) as e:
        print(f"miraikakaku train: {e}", file=sys.stderr)
        return 2
    val = mv.metadata.get("validation_metrics", {})
    print(f"saved model {mv.name} version {mv.version} at {mv.path}")
    if val:
        print("validation: " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in val.items()))
        rmse, base = val.get("rmse"), val.get("zero_baseline_rmse")
        if rmse is not None and base is not None and rmse >= base:
            print("note: this model does not beat the zero-return (random-walk) forecast on the "
                  "validation period, as is common for daily returns; it is used all the same "
                  "until the training pipeline's evaluator gate decides which model serves.")
    return 0


def _run_parser() -> argparse.ArgumentParser:
    from pipelines.prices import PriceOptions

    parser = argparse.ArgumentParser(
        prog="miraikakaku run",
        description="Run the price pipeline (Beam). Any other Beam pipeline option "
                    "(--runner, --streaming, --project, ...) is passed through.")
    PriceOptions._add_argparse_args(parser)
    parser.add_argument("--runner", default="DirectRunner",
                        help="Beam runner. Default: DirectRunner.")
    parser.add_argument("--no-progress", action="store_true", help="No live progress display.")
    return parser


def _cmd_run(argv: Sequence[str]) -> int:
    if "-h" in argv or "--help" in argv:
        _run_parser().print_help()
        return 0
    from pipelines.prices import run

    progress = "--no-progress" not in argv
    argv = [a for a in argv if a != "--no-progress"]
    try:
        summary = run(argv, show_progress=progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"miraikakaku run: {e}", file=sys.stderr)
        return 2
    from pipelines.prices import StreamingRun

    if isinstance(summary, StreamingRun):
        return _wait_streaming(summary)
    _print_summary(summary)
    if summary.events_read and not summary.bars_stored:
        print(f"miraikakaku run: none of the {summary.events_read:,} rows read was stored "
              "(see the dead letters above)", file=sys.stderr)
        return 1
    return 0 if summary.reconciled else 1


def _wait_streaming(handle, interval_seconds: float = 10.0) -> int:
    """Show the stream's counters every ``interval_seconds`` until Ctrl-C, then stop it and
    print the summary (exit 0). A pipeline that fails or ends by itself is not restarted:
    the error and the last counters are printed and the exit code is 1."""
    import time

    print("streaming: reading", handle.resolved.subscription, "- Ctrl-C stops")
    try:
        last = time.monotonic()
        while True:
            time.sleep(0.5)
            failure = handle.failure()
            if failure is not None:
                print(f"miraikakaku run: the stream failed and was not restarted: {failure}",
                      file=sys.stderr, flush=True)
                _print_summary(handle.summary())
                return 1
            if time.monotonic() - last < interval_seconds:
                continue
            last = time.monotonic()
            s = handle.summary()
            print(f"  read {s.events_read:,} · stored {s.bars_stored:,} · dead letters "
                  f"{s.parse_dead_letters + s.validation_dead_letters:,} · duplicates "
                  f"{s.duplicates:,} · predictions {s.predictions:,} · alerts {s.alerts:,}",
                  flush=True)
    except KeyboardInterrupt:
        summary = handle.summary()
        handle.cancel()
        _print_summary(summary)
        return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from miraikakaku.settings import get_settings
    from serving.app.server import serve

    settings = get_settings()
    serve(args.host or settings.api_host, args.port or settings.api_port, settings)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from miraikakaku.settings import get_settings

    settings = get_settings()
    print(f"[1/3] training a first LSTM model on {', '.join(map(str, settings.default_inputs))}")
    rc = _cmd_train(argparse.Namespace(input=None, epochs=args.epochs, units=32,
                                       max_examples=args.max_examples))
    if rc:
        return rc
    print("[2/3] running the pipeline (DirectRunner) into the embedded store")
    rc = _cmd_run([] if args.progress else ["--no-progress"])
    if rc:
        return rc
    print("[3/3] scoring the stored predictions against the realized bars (miraikakaku track)")
    rc = _cmd_track(argparse.Namespace(store=None, instrument=None))
    print(f"\nNext: `miraikakaku serve` (or `make serve`), then open "
          f"http://{settings.api_host}:{settings.api_port}/docs — e.g. "
          f"/v1/symbols/AAPL/quote, /v1/symbols/7203.T/bars?start=2018-01-01, "
          f"/v1/symbols/AAPL/predictions, /v1/models; `miraikakaku evaluate` writes the model "
          f"quality report (LSTM against the last-value and moving-average baselines); "
          f"`miraikakaku report performance --symbols AAPL,MSFT --output perf.html` reads "
          f"the analytics store the run wrote ({settings.data_dir / 'warehouse'})")
    return rc


def _cmd_track(args: argparse.Namespace) -> int:
    """``miraikakaku track``: score stored predictions against realized bars (batch)."""
    from miraikakaku.settings import get_settings
    from miraikakaku.tracking import track_store
    from stores.sqlite import SqliteServingStore

    settings = get_settings()
    path = args.store or settings.store_path
    if not path.exists():
        print(f"miraikakaku track: no serving store at {path}: run `miraikakaku run` first",
              file=sys.stderr)
        return 2
    store = SqliteServingStore(path, source_priority=settings.source_priority)
    analytics_dir = getattr(args, "analytics_dir", None)
    if analytics_dir is None:  # the embedded analytics store, when a run wrote one
        analytics_dir = settings.data_dir / "warehouse"
    target = store
    if analytics_dir and Path(analytics_dir).is_dir():
        from analytics.sink import TeeToAnalytics

        target = TeeToAnalytics(store, analytics_dir)
    try:
        report = track_store(target, instrument_ids=args.instrument or None)
    finally:
        store.close()
    if target is not store:
        print(f"{target.rows.get('model_performance', 0):,} model_performance rows also "
              f"written to the analytics store {analytics_dir}")
    print(f"tracked {report.predictions:,} predictions of {report.instruments:,} instruments in "
          f"{report.seconds:.1f} s: {report.outcomes:,} realized, "
          + ", ".join(f"{n:,} {reason}" for reason, n in report.unmatched.items())
          + f"; {report.rows_written:,} model_performance rows written to {path}")
    for v in report.versions:
        da = "n/a" if v.directional_accuracy is None else f"{v.directional_accuracy:.4f}"
        print(f"  {v.model_name} v{v.model_version}: {v.n:,} outcomes {v.first_date}.."
              f"{v.last_date}, MAPE {v.mape:.4f} %, directional accuracy {da}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """``miraikakaku evaluate``: LSTM vs baselines on the held-out period; writes a report."""
    from models.evaluation import evaluate

    try:
        report = evaluate(model_version=args.model_version, paths=args.input or None,
                          cutoff=args.cutoff, out_dir=args.out, progress=True)
    except (FileNotFoundError, ValueError) as e:
        print(f"miraikakaku evaluate: {e}", file=sys.stderr)
        return 2
    m = report.metrics
    period = m["period"]
    print(f"{m['model']['name']} v{m['model']['version']} on {period['examples']:,} held-out "
          f"forecasts ({period['first_as_of']}..{period['last_as_of']}, "
          f"{period['instruments']} instruments)")
    for name, f in m["forecasts"].items():
        da = f["directional_accuracy"]
        direction = ("n/a" if da is None
                     else f"{da:.4f} (binomial p {f['binomial_p_value']:.3g})")
        prices = ", ".join(f"{c} RMSE {v['rmse']:.4g} MAE {v['mae']:.4g}"
                           for c, v in f["price"].items())
        print(f"  {name:<11} RMSE {f['rmse_log_return']:.6f}  MAE {f['mae_log_return']:.6f}  "
              f"MAPE {f['mape']:.4f} %  direction {direction}  [{prices}]")
    print(f"  always-up share of moves {m['always_up_fraction']:.4f}")
    for path in (report.html_path, report.png_path, report.metrics_path):
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``miraikakaku`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="miraikakaku",
                                     description="MiraiKakaku stock-price data platform.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser(
        "train", help="Train the LSTM on daily prices; saves a new version.",
        description="Train the next-session LSTM on daily price files and save it as a new "
                    "version under $MIRAIKAKAKU_DATA_DIR/models/lstm_daily/.")
    p_train.add_argument("--input", action="append",
                         help="Price file(s). Default: the files `run` reads by default.")
    p_train.add_argument("--epochs", type=int, default=3, help="Training epochs. Default: 3.")
    p_train.add_argument("--units", type=int, default=32, help="LSTM units. Default: 32.")
    p_train.add_argument("--max-examples", type=int, default=200_000,
                         help="Subsample the training set to at most this many windows. "
                              "Default: 200000.")
    p_train.add_argument("--tfx", action="store_true",
                         help="Run the TFX pipeline (examples, statistics, schema, Transform, "
                              "Trainer, Evaluator gate, Pusher) with the LocalDagRunner; a "
                              "model is pushed only if it beats the last-value baseline and "
                              "the current champion.")
    p_train.add_argument("--train-steps", type=int, default=800,
                         help="--tfx: gradient steps of 256 examples. Default: 800.")
    p_train.add_argument("--instrument-fraction", type=float, default=0.125,
                         help="--tfx: share of instruments used, stable by hash. Default: "
                              "0.125 (1.0: all, ~590k examples on the default inputs).")
    p_train.add_argument("--cutoff", default=None,
                         help="--tfx: train/eval split date YYYY-MM-DD. Default: the 85th "
                              "percentile of example dates.")
    p_train.add_argument("--reuse-examples", action="store_true",
                         help="--tfx: reuse the examples of the previous run.")
    sub.add_parser("run", help="Run the price pipeline (see `miraikakaku run --help`).",
                   add_help=False)
    sub.add_parser("report", add_help=False,
                   help="Saved analytics reports: csv, json, html or a png chart "
                        "(see `miraikakaku report --help`).")
    p_serve = sub.add_parser("serve", help="Serve the API (FastAPI + uvicorn).")
    p_serve.add_argument("--host", default=None, help="Default: MIRAIKAKAKU_API_HOST or 127.0.0.1.")
    p_serve.add_argument("--port", type=int, default=None,
                         help="Default: MIRAIKAKAKU_API_PORT or 8000.")
    p_demo = sub.add_parser("demo", help="Train, then run the pipeline on the real default data.")
    p_demo.add_argument("--epochs", type=int, default=3, help="Training epochs. Default: 3.")
    p_demo.add_argument("--max-examples", type=int, default=200_000,
                        help="Training-set size cap. Default: 200000.")
    p_demo.add_argument("--no-progress", dest="progress", action="store_false",
                        help="No live progress display.")
    p_track = sub.add_parser(
        "track", help="Score stored predictions against the realized prices (batch).",
        description="Join the serving store's predictions with the realized bar of their target "
                    "session and write errors per model version, instrument and day to its "
                    "model_performance table (idempotent; rerun after new bars arrive).")
    p_track.add_argument("--store", type=Path, default=None,
                         help="SQLite serving store. Default: $MIRAIKAKAKU_DATA_DIR/serving.db.")
    p_track.add_argument("--instrument", action="append",
                         help="Only this instrument id (repeatable). Default: all.")
    p_track.add_argument("--analytics-dir", dest="analytics_dir", default=None,
                         help="Also write the rows to this analytics store ('' : not). "
                              "Default: $MIRAIKAKAKU_DATA_DIR/warehouse when it exists.")
    p_eval = sub.add_parser(
        "evaluate", help="Model quality report: LSTM vs last-value and 5-bar SMA baselines.",
        description="Score a model version on the held-out period after its training cutoff "
                    "against the last-value and 5-bar moving-average forecasts (RMSE, MAE, "
                    "MAPE, directional accuracy with a binomial test) and write metrics.json, "
                    "predictions.png and report.html under $MIRAIKAKAKU_DATA_DIR/reports/.")
    p_eval.add_argument("--model-version", default=None,
                        help="Registry version. Default: the latest.")
    p_eval.add_argument("--input", action="append",
                        help="Price file(s). Default: the files the model was trained on.")
    p_eval.add_argument("--cutoff", default=None,
                        help="Held-out examples have as-of dates after this YYYY-MM-DD. "
                             "Default: the model's training cutoff.")
    p_eval.add_argument("--out", type=Path, default=None,
                        help="Report directory. Default: a new one under data_dir/reports.")

    from miraikakaku import deadletters
    from miraikakaku.resources import add_init_gcp_parser

    add_init_gcp_parser(sub)
    deadletters.add_parser(sub)
    from miraikakaku import corporate_actions

    corporate_actions.add_parser(sub)
    from collector.cli import add_publish_parser

    add_publish_parser(sub)
    from notifier.service import add_notify_parser

    add_notify_parser(sub)
    from serving.app import accounts

    accounts.add_parsers(sub)
    from quality import report as quality_report

    quality_report.add_parser(sub)

    if argv and argv[0] == "run":
        _quiet_warnings()
        return _cmd_run(argv[1:])
    if argv and argv[0] == "report":
        from analytics.reports import main as report_main

        return report_main(argv[1:])
    args = parser.parse_args(argv)
    _quiet_warnings()
    if args.command == "train":
        return _cmd_train(args)
    if args.command == "serve":
        return _cmd_serve(args)
    if args.command == "track":
        return _cmd_track(args)
    if args.command == "evaluate":
        return _cmd_evaluate(args)
    if args.command == "init-gcp":
        from miraikakaku.resources import run_init_gcp

        return run_init_gcp(args)
    if args.command == "deadletters":
        return deadletters.run_command(args)
    if args.command == "actions":
        return corporate_actions.run_command(args)
    if args.command == "publish":
        from collector.cli import run_publish

        return run_publish(args)
    if args.command == "quality":
        return quality_report.run_command(args)
    if args.command in ("users", "db"):
        return accounts.run_command(args)
    if args.command == "notify":
        from notifier.service import run_notify_command

        return run_notify_command(args)
    return _cmd_demo(args)


if __name__ == "__main__":
    sys.exit(main())
