"""Property-based run of every operation in the API's OpenAPI spec: no request yields a 5xx.

Schemathesis (``schemathesis.openapi.from_asgi``) loads ``/openapi.json`` from the app itself and
Hypothesis generates requests for every documented operation (valid and invalid parameters and
bodies), sent in-process over ASGI with an analyst's access token (a user row written straight
into the app database, a fresh one per operation, so an operation that revokes tokens does not
silence the others). The only check is ``not_a_server_error``; each operation gets
``EXAMPLES`` examples, so the run stays well under a minute. Routes added later are covered
automatically. The app runs over the session's real-data serving store with its lifespan
started (application database migrated), on SQLite and PostgreSQL.

Run: ``.venv/bin/python -m pytest -q tests/api/test_openapi_fuzz.py``.
"""

import json

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from miraikakaku.settings import Settings
from serving.app.main import create_app
from tests.api.tokens import auth_header, make_user_token

pytestmark = pytest.mark.api

EXAMPLES = 15
"""Generated examples per operation."""
STREAM_EXAMPLES = 4
"""Generated examples of an event-stream operation."""
STREAM_SECONDS = 1.0
"""How long each event-stream request is read."""


def _is_event_stream(operation) -> bool:
    return "text/event-stream" in json.dumps(operation.definition.raw, default=str)


def _fuzz(operation, headers: dict[str, str]):
    """A Hypothesis test sending generated cases of ``operation``: ``EXAMPLES``, or
    ``STREAM_EXAMPLES`` read for ``STREAM_SECONDS`` each for a Server-Sent-Events stream (which
    never ends by itself; schemathesis keeps what it sent before the read timeout)."""
    stream = _is_event_stream(operation)
    call_kwargs = {"timeout": STREAM_SECONDS} if stream else {}

    @settings(max_examples=STREAM_EXAMPLES if stream else EXAMPLES, deadline=None,
              database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case) -> None:
        response = case.call(headers=headers, **call_kwargs)
        case.validate_response(response, checks=[not_a_server_error], headers=headers)

    return run


def test_no_operation_answers_5xx(api_data, app_db_url) -> None:
    config = Settings(env="test", data_dir=api_data.settings.data_dir, database_url=app_db_url,
                      rate_limit_per_minute=1_000_000, rate_limit_ip_per_minute=1_000_000)
    app = create_app(config)
    tested: list[str] = []
    failures: list[str] = []
    with TestClient(app):  # the lifespan opens the store and migrates the application database
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        for n, result in enumerate(schema.get_all_operations()):
            operation = result.ok()
            _, token = make_user_token(app, email=f"fuzz{n}@example.com")
            try:
                _fuzz(operation, auth_header(token))()
            except Exception as e:  # keep going: report every failing operation at once
                failures.append(f"{operation.label}: {type(e).__name__}: {str(e)[:1500]}")
            tested.append(operation.label)
    assert not failures, "\n\n".join(failures)
    assert len(tested) >= 8, tested  # the read API alone has eight documented operations
    assert any("/v1/symbols/{symbol}/bars" in label for label in tested)
