"""Writes are committed before the response is sent (read-your-writes), on SQLite and
PostgreSQL.

FastAPI runs the exit code of a ``yield`` dependency after the response by default; the session
dependency must commit before it. The test slows every commit of the app's engine by 0.5 s (a
SQLAlchemy ``before_commit`` listener on the real engine, not a mock) and checks, from a second
connection, that a registered user exists as soon as the 201 has arrived from a real uvicorn
server. With the commit after the response this fails every time. Found as a flaky e2e test:
log-in right after register answered 401 under load.
"""

import threading
import time

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from miraikakaku.settings import Settings
from serving.app.main import create_app
from tests.emulators import free_port

pytestmark = pytest.mark.api


def test_register_is_committed_before_the_201(app_db_url, tmp_path) -> None:
    settings = Settings(env="test", data_dir=tmp_path, database_url=app_db_url)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    probe = sa.create_engine(app_db_url)
    try:
        for _ in range(400):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started

        @sa.event.listens_for(app.state.db.engine, "commit")
        def slow_commit(conn) -> None:  # noqa: ANN001 - SQLAlchemy connection
            time.sleep(0.5)

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for i in range(3):
                email = f"reader{i}@example.com"
                r = http.post("/v1/auth/register", json={"email": email,
                                                        "password": "a long passphrase 42"})
                assert r.status_code == 201, r.text
                with probe.connect() as conn:
                    n = conn.execute(sa.text("SELECT count(*) FROM users WHERE email = :e"),
                                     {"e": email}).scalar_one()
                assert n == 1, "the 201 arrived before the user was committed"
                login = http.post("/v1/auth/login", data={"username": email,
                                                          "password": "a long passphrase 42"})
                assert login.status_code == 200, login.text
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        probe.dispose()
