"""Schemathesis against a real `quarry serve`: no 5xx, every answer as documented, and every
error in the one JSON shape (fixed seed, bounded examples)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ..servers import Process, quarry_env


@schemathesis.check
def one_error_shape(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx answer is `{"error": {"code", "message", "detail"}}`."""
    if response.status_code < 400:
        return None
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    ok = isinstance(error, dict) and {"code", "message", "detail"} <= set(error)
    assert ok, f"{case.operation.label}: not the error shape: {str(body)[:300]}"
    return True


FUZZ_KEY = "fuzz-admin-key"
AS_ADMIN = {"Authorization": f"Bearer {FUZZ_KEY}"}  # (lock nobody out)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, minilm_path: str, redis_process: Any
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    env = quarry_env(
        root / "data",
        minilm_path,
        redis_process.url,
        QUARRY_COLLECTION="fuzz",
        QUARRY_MAX_UPLOAD_MB="2",
        QUARRY_API_KEYS=FUZZ_KEY,  # an admin key: the keys a fuzzed POST /v1/keys makes
    )
    server = Process("serve", env, root / "server.log")
    server.start()
    upload = httpx.post(
        f"{server.url}/v1/documents",
        files=[("files", ("owls.txt", b"Owls hunt at night with silent flight."))],
        headers=AS_ADMIN,
        timeout=30,
    )
    assert upload.status_code == 202, upload.text
    yield server.url
    server.stop()
    log = (root / "server.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_api_holds_under_fuzzing(served: str) -> None:
    schema = schemathesis.openapi.from_url(f"{served}/openapi.json", headers=AS_ADMIN)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        one_error_shape,
    ]
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(checks=checks, timeout=60, headers=AS_ADMIN)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
