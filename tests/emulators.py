"""Start and stop the official Google Cloud emulators (Pub/Sub, Bigtable) for the tests.

``.ci/run`` starts both before the tests and exports ``PUBSUB_EMULATOR_HOST`` and
``BIGTABLE_EMULATOR_HOST``; when those are unset (``make test`` on a laptop), the session fixtures
in ``tests/conftest.py`` start the emulators themselves on free ports and stop them afterwards.
A test that needs an emulator never skips: if one cannot be started, the test errors.
Run ``python -m tests.emulators`` to start both in the foreground for manual work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

__all__ = ["drain", "free_port", "running_emulator", "wait_for_port"]


def free_port() -> int:
    """An unused TCP port on localhost."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drain(subscription: str, timeout: float = 10.0) -> list:
    """Pull and acknowledge every message waiting on ``subscription`` (a full path), until a
    pull waits ``timeout`` seconds for nothing.

    Returns:
        The ``google.pubsub_v1.PubsubMessage``s, in the order pulled.
    """
    from google.cloud import pubsub_v1

    sub = pubsub_v1.SubscriberClient()
    out: list = []
    try:
        while True:
            try:
                resp = sub.pull(subscription=subscription, max_messages=100, timeout=timeout,
                                retry=None)
            except Exception:  # noqa: BLE001 - DeadlineExceeded: nothing waiting
                return out
            if not resp.received_messages:
                return out
            out += [m.message for m in resp.received_messages]
            sub.acknowledge(subscription=subscription,
                            ack_ids=[m.ack_id for m in resp.received_messages])
    finally:
        sub.close()


def wait_for_port(host: str, timeout: float = 60.0) -> None:
    """Wait until ``host`` (``name:port``) accepts TCP connections.

    Raises:
        TimeoutError: not reachable within ``timeout`` seconds.
    """
    name, port = host.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((name, int(port)), 1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host} after {timeout:.0f} s")


def _pubsub_ready(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=1) as r:
            return r.read().strip() == b"Ok"
    except OSError:
        return False


@contextlib.contextmanager
def running_emulator(kind: str, port: int | None = None, project: str = "miraikakaku-local"
                     ) -> Iterator[str]:
    """Run ``gcloud beta emulators {kind} start`` and yield its ``host:port``.

    Args:
        kind: ``pubsub`` or ``bigtable``.
        port: port to listen on (default: a free one).
        project: project id for the Pub/Sub emulator.

    Raises:
        FileNotFoundError: gcloud is not installed.
        TimeoutError: the emulator did not come up within 60 s.
    """
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise FileNotFoundError("gcloud not found: install the Google Cloud CLI with the "
                                "pubsub and bigtable emulator components")
    host = f"localhost:{port or free_port()}"
    cmd = [gcloud, "beta", "emulators", kind, "start", f"--host-port={host}"]
    if kind == "pubsub":
        cmd.append(f"--project={project}")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_port(host)
        if kind == "pubsub":
            deadline = time.monotonic() + 60
            while not _pubsub_ready(host):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the Pub/Sub emulator on {host} is not ready")
                time.sleep(0.2)
        yield host
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":  # pragma: no cover - manual use
    with running_emulator("pubsub", 8085) as ps, running_emulator("bigtable", 8086) as bt:
        print(f"export PUBSUB_EMULATOR_HOST={ps} BIGTABLE_EMULATOR_HOST={bt}")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
