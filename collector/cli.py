"""The ``publish`` subcommand: send price events from a file or a live provider to Pub/Sub.

``add_publish_parser(subparsers)`` registers it on an argparse subparsers object and
``run_publish(args)`` runs it and returns the exit code (0: everything published; 1: some
messages failed after retries, listed by event id; 2: bad arguments, missing file or topic). Until
it is wired into ``miraikakaku``, run it as ``python -m collector.cli publish ...``, e.g. against
the emulator (``PUBSUB_EMULATOR_HOST=localhost:8085``): ``python -m collector.cli publish
--symbols IBM --start 2013-10-07T13:30Z --end 2013-10-07T14:30Z --speed 60 --create-topic``
replays the first hour of IBM's 2013-10-07 session in one minute.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["add_publish_parser", "run_publish", "default_topic", "main"]

PROJECT_ENV = "MIRAIKAKAKU_GCP_PROJECT"
DEFAULT_PROJECT = "miraikakaku-local"
DEFAULT_TOPIC = "prices"
DEFAULT_INPUT = "normalized/us_tick_trades_lean.normalized.csv.gz"


def default_topic() -> str:
    """``projects/{$MIRAIKAKAKU_GCP_PROJECT or miraikakaku-local}/topics/prices``."""
    project = os.environ.get(PROJECT_ENV, "").strip() or DEFAULT_PROJECT
    return f"projects/{project}/topics/{DEFAULT_TOPIC}"


def _default_input() -> str:
    from miraikakaku.settings import get_settings

    return str(get_settings().shared_data_dir / DEFAULT_INPUT)


def _symbols(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _utc_arg(text: str):
    from collector.files import parse_utc

    try:
        return parse_utc(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _topic_arg(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "topics" or not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not projects/PROJECT/topics/TOPIC")
    return text


def add_publish_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``publish`` subcommand to ``subparsers`` (from ``add_subparsers``).

    Returns:
        The new parser; its defaults carry ``func=run_publish``.
    """
    p = subparsers.add_parser(
        "publish", help="Publish price events to Pub/Sub (file replay or live provider).",
        description="Publish PriceEvents to a Pub/Sub topic, one message per event with the "
                    "attributes symbol, instrument_id, event_time, event_id, source and "
                    "schema_version and the instrument as ordering key. Uses the emulator when "
                    "PUBSUB_EMULATOR_HOST is set, else Google Cloud with Application Default "
                    "Credentials. Exit code 1 when messages still failed after retries (or, with "
                    "--provider, when a quote could not be fetched), 2 for bad arguments.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", default=None, metavar="FILE",
                     help="Price file to replay (.csv, .csv.gz, .parquet; tick/second/minute/hour "
                          f"from the name). Default: ../shared/data/{DEFAULT_INPUT}.")
    src.add_argument("--provider", choices=["alphavantage"], default=None,
                     help="Poll a live quote API instead of a file (key from "
                          "MIRAIKAKAKU_ALPHAVANTAGE_API_KEY); needs --symbols.")
    p.add_argument("--topic", type=_topic_arg, default=None,
                   help=f"projects/P/topics/T. Default: projects/${PROJECT_ENV} (or "
                        f"{DEFAULT_PROJECT})/topics/{DEFAULT_TOPIC}.")
    p.add_argument("--symbols", type=_symbols, action="extend", default=None,
                   help="Comma-separated tickers or instrument ids (IBM,SPY or XNYS:IBM); "
                        "repeatable. Default: all in the file.")
    p.add_argument("--start", type=_utc_arg, default=None,
                   help="Keep events at or after this ISO 8601 time with offset "
                        "(2013-10-07T13:30Z). Default: no bound.")
    p.add_argument("--end", type=_utc_arg, default=None,
                   help="Keep events before this ISO 8601 time with offset. Default: no bound.")
    p.add_argument("--limit", type=int, default=None,
                   help="Publish at most this many events. Default: no limit.")
    p.add_argument("--source", default=None,
                   help="Source name for rows without a source column. Default: from the file "
                        "name (lean for the Lean files).")
    p.add_argument("--sorted-input", action="store_true",
                   help="Rows of each symbol are in time order (true of ../shared/data/"
                        "normalized): stop reading once every --symbols is past --end.")
    p.add_argument("--speed", type=_positive, default=None,
                   help="Replay at this multiple of real time (60 = one market hour per "
                        "minute). Default: as fast as possible.")
    p.add_argument("--max-rate", type=_positive, default=None,
                   help="At most this many messages per second. Default: no cap.")
    p.add_argument("--create-topic", action="store_true",
                   help="Create the topic if it does not exist (handy on the emulator).")
    p.add_argument("--attempts", type=int, default=5,
                   help="Publish attempts per message for transient errors. Default: 5.")
    p.add_argument("--iterations", type=int, default=1,
                   help="With --provider: polling rounds (0 = until interrupted). Default: 1.")
    p.add_argument("--poll-interval", type=_positive, default=60.0,
                   help="With --provider: seconds between rounds. Default: 60.")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="No live progress display.")
    p.set_defaults(func=run_publish)
    return p


def _err(message: str) -> int:
    print(f"miraikakaku publish: {message}", file=sys.stderr)
    return 2


def _preflight_topic(topic: str, create: bool, publisher) -> str | None:
    """Make sure the topic exists (or create it); return an error message or None."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    from collector.publisher import PREFLIGHT_RETRY, ensure_topic

    where = os.environ.get("PUBSUB_EMULATOR_HOST") or "Google Cloud"
    try:
        if create:
            created = ensure_topic(topic, publisher)
            print(f"{'created' if created else 'using existing'} topic {topic}", file=sys.stderr)
            return None
        publisher.get_topic(request={"topic": topic}, retry=PREFLIGHT_RETRY, timeout=10.0)
    except gexc.NotFound:
        return f"topic {topic} does not exist (pass --create-topic to create it)"
    except (gexc.GoogleAPIError, auth_exc.GoogleAuthError) as e:
        return f"cannot reach Pub/Sub ({where}) to check {topic}: {type(e).__name__}: {e}"
    return None


def _print_report(report, topic: str, what: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value", justify="right")
    t.add_row("published", f"{report.published:,}")
    t.add_row("failed", f"[red]{report.failed:,}[/red]" if report.failed else "0")
    t.add_row("retries", f"{report.retries:,}")
    t.add_row("dead-lettered input rows", f"{report.dead_lettered_input:,}")
    for reason, n in sorted(report.dead_letter_reasons.items()):
        t.add_row(f"  {reason}", f"{n:,}")
    t.add_row("wall time", f"{report.seconds:,.2f} s")
    t.add_row("messages per second", f"{report.messages_per_second:,.0f}")
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    console.print(f"[bold]MiraiKakaku publish[/bold]: {what} → {topic}")
    console.print(t)
    if report.failed:
        shown = report.failed_event_ids[:20]
        more = report.failed - len(shown)
        print("failed event ids:\n  " + "\n  ".join(shown)
              + (f"\n  ... and {more} more" if more > 0 else ""), file=sys.stderr)


def run_publish(args: argparse.Namespace) -> int:
    """Run ``publish`` with parsed arguments; returns the exit code (0, 1 or 2)."""
    from collector.publisher import RetryPolicy, make_publisher

    topic = args.topic or default_topic()
    if args.limit is not None and args.limit < 0:
        return _err("--limit must be >= 0")
    if args.start and args.end and args.start >= args.end:
        return _err("--start must be before --end")
    try:
        policy = RetryPolicy(attempts=args.attempts)
    except ValueError as e:
        return _err(str(e))
    if args.provider and not args.symbols:
        return _err("--provider needs --symbols")
    publisher = make_publisher()
    try:
        problem = _preflight_topic(topic, args.create_topic, publisher)
        if problem:
            return _err(problem)
        if args.provider:
            return _run_poll(args, topic, publisher, policy)
        from collector.files import events_from_file

        path = args.input or _default_input()
        try:
            events = events_from_file(path, symbols=args.symbols, start=args.start, end=args.end,
                                      limit=args.limit, source=args.source,
                                      sorted_input=args.sorted_input)
            first = next(events, None)  # surfaces a missing file or a bad header now
        except FileNotFoundError as e:
            return _err(f"no such file: {e}")
        except ValueError as e:
            return _err(str(e))

        def chained():
            if first is not None:
                yield first
            yield from events

        report = _publish_with_progress(chained(), topic, publisher, policy, args)
        _print_report(report, topic, os.path.basename(path))
        return 1 if report.failed else 0
    finally:
        publisher.stop()


def _publish_with_progress(events, topic, publisher, policy, args):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from collector.publisher import publish_events

    if not args.progress:
        return publish_events(events, topic, speed=args.speed, max_rate=args.max_rate,
                              publisher=publisher, policy=policy)
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("publishing", total=args.limit)
        return publish_events(events, topic, speed=args.speed, max_rate=args.max_rate,
                              publisher=publisher, policy=policy,
                              progress=lambda n: progress.update(task, completed=n))


def _run_poll(args, topic, publisher, policy) -> int:
    from collector.providers import AlphaVantageProvider, poll

    try:
        provider = AlphaVantageProvider()
    except ValueError as e:
        return _err(str(e))
    with provider:
        def on_round(n, rep):
            print(f"round {n}: {rep.quotes} quotes, {rep.publish.published} published, "
                  f"{rep.transient_errors} transient / {rep.permanent_errors} permanent errors",
                  file=sys.stderr)

        report = poll(provider, args.symbols, topic, args.poll_interval,
                      args.iterations or None, publisher=publisher, policy=policy,
                      on_round=on_round)
    _print_report(report.publish, topic, provider.name)
    if report.transient_errors or report.permanent_errors:
        print(f"fetch errors: {report.transient_errors} transient, {report.permanent_errors} "
              "permanent (see the log above)", file=sys.stderr)
    return 1 if report.publish.failed or report.transient_errors or report.permanent_errors \
        else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m collector.cli publish ...``."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m collector.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_publish_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
