"""Write everything the pipeline produces to the serving store through one batched writer.

``WriteToServingStore``: ``PCollection[PriceEvent | BarFlag | Prediction | AlertEvent |
DeadLetter | Instrument]`` → ``PCollection[int]`` (records written per batch).

SQLite has one writer: all record kinds are flattened into this one sink, batched with
``beam.BatchElements`` and written one transaction per batch (``SqliteServingStore.write_batch``).
Writes are idempotent (row-key primary keys), so a retried bundle or a replayed file leaves the
same rows. Counters in namespace ``WriteToServingStore`` count what was written: one per record
type (``PriceEvent``, ``Prediction``, ...), ``dead_letter:<step>:<reason>``, ``flag:<flag>`` and
``flagged_bars`` (bars stored with at least one validation flag).

``WriteDeadLetters`` is the same sink for a dead-letter-only PCollection.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence

import apache_beam as beam

from miraikakaku.schema import DeadLetter, PriceEvent
from stores.base import BarFlag
from stores.sqlite import SqliteServingStore
from transforms import progress, pubsub_ack

__all__ = ["WriteToServingStore", "WriteDeadLetters", "WriteToBigtableStore", "PublishAlerts",
           "PublishDeadLetters", "PublishEvents", "mutate_rows_with_retry"]


class _RecordCounter:
    """Counts stored records per kind (namespace ``WriteToServingStore``), for every sink."""

    def __init__(self) -> None:
        self._counters: dict[str, object] = {}

    def count(self, records) -> None:
        kinds: collections.Counter[str] = collections.Counter()
        for r in records:
            kinds[type(r).__name__] += 1
            if isinstance(r, DeadLetter):
                kinds[f"dead_letter:{r.step}:{r.reason}"] += 1
            elif isinstance(r, BarFlag):
                kinds[f"flag:{r.flag}"] += 1
            elif isinstance(r, PriceEvent) and r.flags:
                kinds["flagged_bars"] += 1
                for f in r.flags:
                    kinds[f"flag:{f}"] += 1
        for kind, n in kinds.items():
            c = self._counters.get(kind)
            if c is None:
                c = self._counters[kind] = progress.counter("WriteToServingStore", kind)
            c.inc(n)


class _WriteBatchFn(beam.DoFn):
    def __init__(self, store_path: str, source_priority: Sequence[str]) -> None:
        self._path = store_path
        self._priority = list(source_priority)
        self._records = _RecordCounter()

    def setup(self) -> None:
        self._store = SqliteServingStore(self._path, source_priority=self._priority)

    def process(self, batch: list[object]):
        n = self._store.write_batch(batch)  # one transaction: durable when it returns
        progress.tick("written", n)
        self._records.count(batch)
        pubsub_ack.settle(batch)
        yield n

    def teardown(self) -> None:
        store = getattr(self, "_store", None)
        if store is not None:
            store.close()


class WriteToServingStore(beam.PTransform):
    """Batch records and write them to the embedded serving store (see module docstring).

    Args:
        store_path: SQLite file.
        source_priority: source names, best first (latest-quote tie-break).
        min_batch_size, max_batch_size: batching bounds (records per transaction).
    """

    def __init__(self, store_path: str, source_priority: Sequence[str],
                 min_batch_size: int = 500, max_batch_size: int = 5000) -> None:
        super().__init__()
        self._path = str(store_path)
        self._priority = list(source_priority)
        self._min = min_batch_size
        self._max = max_batch_size

    def expand(self, records):
        return (records
                | "Batch" >> beam.BatchElements(min_batch_size=self._min,
                                                max_batch_size=self._max)
                | "WriteBatch" >> beam.ParDo(_WriteBatchFn(self._path, self._priority)))


class WriteDeadLetters(WriteToServingStore):
    """``PCollection[DeadLetter]`` → the store's dead-letter table (same batched writer)."""


_TRANSIENT_CODES = frozenset({4, 8, 10, 13, 14})
"""gRPC codes the Bigtable sink retries: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED,
INTERNAL, UNAVAILABLE. Anything else is permanent: the bundle fails with the row keys named."""

WRITE_ATTEMPT_TIMEOUT_SECONDS = 20.0
"""Seconds one ``mutate_rows`` attempt may take before it counts as DEADLINE_EXCEEDED (without a
timeout a call to an unresponsive server waits forever)."""
WRITE_RETRY_SECONDS = 600.0
"""How long the Bigtable sink keeps retrying transient failures of a bundle's rows before the
bundle (and so the pipeline, on the DirectRunner) fails."""
WRITE_BACKOFF_SECONDS = (0.5, 30.0)
"""First and longest sleep between retries (doubling)."""


def _transient_code(exc: BaseException) -> int | None:
    """The gRPC status code of a transient error (``_TRANSIENT_CODES``), else None."""
    from google.api_core import exceptions

    code = None
    if isinstance(exc, exceptions.RetryError):
        return 4  # the client's own retry ran out: as DEADLINE_EXCEEDED
    if isinstance(exc, exceptions.GoogleAPICallError) and exc.grpc_status_code is not None:
        code = exc.grpc_status_code.value[0]
    elif hasattr(exc, "code") and callable(exc.code):  # a raw grpc.RpcError
        try:
            code = exc.code().value[0]
        except Exception:  # noqa: BLE001 - not a gRPC status after all
            return None
    return code if code in _TRANSIENT_CODES else None


def mutate_rows_with_retry(table, rows: list, *, table_id: str = "",
                           attempt_timeout: float = WRITE_ATTEMPT_TIMEOUT_SECONDS,
                           retry_seconds: float = WRITE_RETRY_SECONDS,
                           on_retry=None) -> int:
    """Write ``rows`` with ``Table.mutate_rows``, retrying transient failures until all succeed.

    Each attempt sends only the rows not yet written (the client clears a row's mutations once
    it is written, and rewriting a row is idempotent: every cell has an explicit timestamp).
    The client's own retry is off (``retry=None``): python-bigtable's default retries
    UNAVAILABLE / DEADLINE_EXCEEDED / ABORTED for 120 s and then returns the statuses, with
    ``None`` for rows that never got an answer. Here a whole-call failure (an exception whose
    status is transient) and per-row transient statuses are retried after ``0.5, 1, 2, ...,
    30`` s sleeps, for up to ``retry_seconds``.

    Args:
        table: a ``google.cloud.bigtable.table.Table``.
        rows: ``DirectRow`` objects.
        table_id: the table's id, for messages.
        attempt_timeout: seconds per attempt.
        retry_seconds: seconds after which a still-failing write raises.
        on_retry: called with the number of rows about to be retried (counters).

    Returns:
        The number of rows written (``len(rows)``).

    Raises:
        ValueError: a row failed with a permanent status (names the rows and the status).
        RuntimeError: transient failures lasted longer than ``retry_seconds``.
        google.api_core.exceptions.GoogleAPICallError: a permanent error of the whole call
            (NotFound table, PermissionDenied, ...).
    """
    import logging
    import time

    pending = list(rows)
    deadline = time.monotonic() + retry_seconds
    delay, longest = WRITE_BACKOFF_SECONDS
    attempt = 0
    while True:
        attempt += 1
        error: str
        try:
            statuses = table.mutate_rows(pending, retry=None, timeout=attempt_timeout)
            failed = [(r, s) for r, s in zip(pending, statuses, strict=True)
                      if s is None or s.code]
            permanent = [(r, s) for r, s in failed
                         if s is not None and s.code not in _TRANSIENT_CODES]
            if permanent:
                keys = ", ".join(r.row_key.decode() for r, _ in permanent[:5])
                raise ValueError(
                    f"{len(permanent)} of {len(rows)} Bigtable mutations failed in {table_id} "
                    f"(permanent: code {permanent[0][1].code} {permanent[0][1].message}); "
                    f"rows {keys}")
            if not failed:
                return len(rows)
            first = next((s for _, s in failed if s is not None), None)
            error = (f"code {first.code} {first.message}" if first is not None
                     else "no answer")
            pending = [r for r, _ in failed]
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - transient ones are retried, others re-raised
            if _transient_code(e) is None:
                raise
            error = f"{type(e).__name__}: {str(e)[:200]}"
        if time.monotonic() + delay > deadline:
            keys = ", ".join(r.row_key.decode() for r in pending[:5])
            raise RuntimeError(
                f"{len(pending)} of {len(rows)} Bigtable mutations in {table_id} still failing "
                f"after {retry_seconds:.0f} s ({attempt} attempts, transient: {error}); "
                f"rows {keys}")
        logging.getLogger(__name__).warning(
            "Bigtable write of %d rows to %s failed (%s); retry %d in %.1f s", len(pending),
            table_id, error, attempt, delay)
        if on_retry is not None:
            on_retry(len(pending))
        time.sleep(delay)
        delay = min(delay * 2, longest)


_BIGTABLE_CLIENTS: dict[tuple[str, str | None], object] = {}
_BIGTABLE_CLIENTS_LOCK = threading.Lock()


def _bigtable_client(project: str):
    """One ``google.cloud.bigtable.Client`` per project (and emulator host) and process.

    The DirectRunner calls ``DoFn.setup`` and ``teardown`` around every bundle (Beam 2.74
    ``transform_evaluator._ParDoEvaluator``), and its Pub/Sub source makes a bundle of each pull
    (Beam's reader: at most 10 messages; ``transforms.pubsub_ack``: at most 500, often a few),
    so a client per ``setup`` meant a new gRPC channel and a credentials lookup per few
    messages. The client is thread-safe; on Dataflow ``setup`` runs once per DoFn instance
    and this only shares a client between instances of a worker process.
    """
    import os

    from google.cloud.bigtable import Client

    key = (project, os.environ.get("BIGTABLE_EMULATOR_HOST"))
    with _BIGTABLE_CLIENTS_LOCK:
        client = _BIGTABLE_CLIENTS.get(key)
        if client is None:
            client = _BIGTABLE_CLIENTS[key] = Client(project=project)
        return client


class _WriteBigtableRowsFn(beam.DoFn):
    """Converts records to rows and writes each bundle's rows per table with
    ``mutate_rows_with_retry``, on the process's client for the project (``_bigtable_client``).

    Counters and acknowledgements follow the write: the records of a bundle are counted
    (``_RecordCounter``) and settled (``pubsub_ack.settle``: their Pub/Sub messages may be
    acknowledged) only after every row of the bundle is written. ``WriteToBigtableStore/
    retried_rows`` counts rows sent again after a transient failure."""

    def __init__(self, project: str, instance: str) -> None:
        self._project = project
        self._instance = instance
        self._records = _RecordCounter()
        self._retried = progress.counter("WriteToBigtableStore", "retried_rows")

    def setup(self) -> None:
        self._client = _bigtable_client(self._project)
        self._tables: dict[str, object] = {}

    def start_bundle(self) -> None:
        self._rows: dict[str, list] = collections.defaultdict(list)
        self._pending: list[object] = []

    def process(self, record):
        from stores.bigtable import to_direct_rows

        for table_id, row in to_direct_rows(record):
            self._rows[table_id].append(row)
        self._pending.append(record)

    def finish_bundle(self):
        for table_id, rows in self._rows.items():
            table = self._tables.get(table_id)
            if table is None:
                table = self._tables[table_id] = self._client.instance(
                    self._instance).table(table_id)
            mutate_rows_with_retry(table, rows, table_id=table_id, on_retry=self._retried.inc)
            progress.tick("written", len(rows))
        # every row of the bundle is written: count what was stored, release its messages
        self._records.count(self._pending)
        pubsub_ack.settle(self._pending)
        self._rows = collections.defaultdict(list)
        self._pending = []

    def teardown(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()


class WriteToBigtableStore(beam.PTransform):
    """Records → Bigtable rows (``stores.bigtable.to_direct_rows``), written per bundle and table
    with ``Table.mutate_rows``. Cells carry explicit timestamps, so rewrites (a retried bundle, a
    replayed message) are idempotent. Transient failures (UNAVAILABLE, DEADLINE_EXCEEDED, ...;
    an outage) are retried inside the sink with exponential backoff for up to
    ``WRITE_RETRY_SECONDS`` (the DirectRunner does not retry a failed bundle: the error would
    stop the pipeline); a permanent one fails the bundle with the rows named. Records are
    counted, and their Pub/Sub messages settled (``transforms.pubsub_ack``), only once written.

    Why not Beam's ``WriteToBigTable``: its DoFn builds a new ``MutationsBatcher`` in every
    ``start_bundle``; each batcher starts a flush-timer thread and a thread pool and registers
    an atexit hook. Beam's DirectRunner Pub/Sub source made bundles of 10 messages, so a
    10,000-message burst meant about 1,000 batchers per table: thousands of thread starts, each
    waiting for the GIL under load, and a growing thread count. Profiled here on a 3,000-message
    run (Bigtable and Pub/Sub emulators): 41 % of the executor's samples were in
    ``Thread.start`` inside ``MutationsBatcher.__init__``, with about 135 threads parked — the
    "writes nothing for minutes after a burst" of earlier probes (cf. apache/beam#28715,
    googleapis/python-bigtable#949). Re-batching with ``GroupIntoBatches`` in front of it made the
    stream slower still (every extra ParDo costs the DirectRunner a per-bundle DoFn signature
    inspection), so this sink is one DoFn with one client.

    Args:
        store: a ``StoreSpec`` of kind ``bigtable``.
    """

    def __init__(self, store) -> None:
        super().__init__()
        self._store = store

    def expand(self, records):
        return records | "WriteRows" >> beam.ParDo(
            _WriteBigtableRowsFn(self._store.project, self._store.instance))


def _alert_message(alert):
    import json

    from apache_beam.io.gcp.pubsub import PubsubMessage

    body = {"alert_id": alert.alert_id, "rule_id": alert.rule_id, "kind": alert.kind,
            "instrument_id": alert.instrument_id, "event_time": alert.event_time.isoformat(),
            "session_date": alert.session_date.isoformat(), "value": alert.value,
            "threshold": alert.threshold, "message": alert.message}
    return PubsubMessage(json.dumps(body).encode(), {
        "alert_id": alert.alert_id, "instrument_id": alert.instrument_id, "kind": alert.kind,
        "event_time": alert.event_time.isoformat()})


def _dead_letter_message(dl):
    import json

    from apache_beam.io.gcp.pubsub import PubsubMessage

    body = {"dead_letter_id": dl.dead_letter_id, "step": dl.step, "reason": dl.reason,
            "detail": dl.detail, "payload": dl.payload, "origin": dl.origin,
            "event_time": dl.event_time.isoformat() if dl.event_time else None,
            "position": dl.position}
    return PubsubMessage(json.dumps(body).encode(), {
        "dead_letter_id": dl.dead_letter_id, "step": dl.step, "reason": dl.reason})


class PublishAlerts(beam.PTransform):
    """``PCollection[AlertEvent]`` → the alerts topic (JSON body; attributes ``alert_id``,
    ``instrument_id``, ``kind``, ``event_time``). Consumers deduplicate by ``alert_id``."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self._topic = topic

    def expand(self, alerts):
        from apache_beam.io.gcp.pubsub import WriteToPubSub

        return (alerts | "ToMessage" >> beam.Map(_alert_message)
                | "Publish" >> WriteToPubSub(self._topic, with_attributes=True))


def _event_message(record):
    from apache_beam.io.gcp.pubsub import PubsubMessage

    from notifier.events import encode_event, event_id_of

    topic, payload = encode_event(record)
    when = getattr(record, "event_time", None) or getattr(record, "as_of_time", None)
    return PubsubMessage(payload.encode(), {
        "event_topic": topic, "event_id": event_id_of(record)[:1024],
        "instrument_id": record.instrument_id, "event_time": when.isoformat()})


class PublishEvents(beam.PTransform):
    """``PCollection[PriceEvent | Prediction | AlertEvent]`` → a Pub/Sub topic, in the
    notifier's wire format (``notifier.events.encode_event``: the same JSON the embedded
    outbox holds; ``decode_event`` reads it back). Attributes: ``event_topic`` (``prices``,
    ``predictions`` or ``alerts``), ``event_id`` (stable: consumers deduplicate by it),
    ``instrument_id``, ``event_time`` (a prediction's ``as_of_time``). The notifier reads the
    topic through a subscription with ``notifier.pubsub_source.PubSubSource``."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self._topic = topic

    def expand(self, records):
        from apache_beam.io.gcp.pubsub import WriteToPubSub

        return (records | "ToMessage" >> beam.Map(_event_message)
                | "Publish" >> WriteToPubSub(self._topic, with_attributes=True))


class PublishDeadLetters(beam.PTransform):
    """``PCollection[DeadLetter]`` → the dead-letter topic (the whole dead letter as JSON;
    attributes ``step``, ``reason``, ``dead_letter_id``), for ``miraikakaku deadletters``."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self._topic = topic

    def expand(self, dead_letters):
        from apache_beam.io.gcp.pubsub import WriteToPubSub

        return (dead_letters | "ToMessage" >> beam.Map(_dead_letter_message)
                | "Publish" >> WriteToPubSub(self._topic, with_attributes=True))
