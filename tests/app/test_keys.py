"""Keys with scopes, collections and limits, and the audit log, against real `quarry serve`
processes and a real Redis: every route tried with a key of each scope, a burst from several
clients across two replicas, revocation without a restart."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.main import create_app
from app.settings import Settings

from ..servers import Process

ADMIN = "env-admin-key"

# What the issue asks of each route (not read from the code under test): read = search,
# documents, jobs (and the model, read-only); write = upload, delete, re-index, sources;
# admin = collections' upkeep, migrations, backups, keys, the audit log.
EXPECTED = {
    ("GET", "/v1/documents"): "read",
    ("GET", "/v1/documents/{doc_id}"): "read",
    ("POST", "/v1/documents"): "write",
    ("DELETE", "/v1/documents/{doc_id}"): "write",
    ("POST", "/v1/documents/{doc_id}/reingest"): "write",
    ("GET", "/v1/jobs"): "read",
    ("GET", "/v1/jobs/{job_id}"): "read",
    ("GET", "/v1/jobs/{job_id}/events"): "read",
    ("DELETE", "/v1/jobs/{job_id}"): "write",
    ("POST", "/v1/jobs/{job_id}/retry"): "write",
    ("POST", "/v1/search"): "read",
    ("GET", "/v1/instructions"): "read",
    ("GET", "/v1/models"): "read",
    ("POST", "/v1/embeddings"): "read",
    ("POST", "/v1/rerank"): "read",
    ("GET", "/v1/collections"): "read",
    ("GET", "/v1/stats"): "read",
    ("POST", "/v1/collections/{name}/sparse"): "admin",
    ("POST", "/v1/collections/{name}/migrate"): "admin",
    ("GET", "/v1/collections/{name}/migration"): "admin",
    ("DELETE", "/v1/collections/{name}/migration"): "admin",
    ("GET", "/v1/sources"): "write",
    ("POST", "/v1/sources"): "write",
    ("GET", "/v1/sources/{name}"): "write",
    ("DELETE", "/v1/sources/{name}"): "write",
    ("POST", "/v1/sources/{name}/sync"): "write",
    ("GET", "/v1/backup"): "admin",
    ("POST", "/v1/keys"): "admin",
    ("GET", "/v1/keys"): "admin",
    ("DELETE", "/v1/keys/{key_id}"): "admin",
    ("GET", "/v1/audit"): "admin",
}
SCOPES = ("read", "write", "admin")
PARAMS = {"doc_id": "no-such-doc", "job_id": "0" * 32, "name": "served", "key_id": "0" * 12}


def _routes() -> set[tuple[str, str]]:
    """Every route the API publishes (its OpenAPI document), the internal ones aside."""
    paths = create_app(Settings(_env_file=None)).openapi()["paths"]  # type: ignore[call-arg]
    return {
        (method.upper(), path)
        for path, methods in paths.items()
        if path.startswith("/v1/") and not path.startswith("/v1/internal/")
        for method in methods
    }


def _cli(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _call(url: str, key: str, method: str, path: str) -> httpx.Response:
    for name, value in PARAMS.items():
        path = path.replace("{" + name + "}", value)
    headers = {"Authorization": f"Bearer {key}"}
    if (method, path) == ("POST", "/v1/documents"):
        files = {"files": ("tiny.txt", b"a tiny document about herons")}
        return httpx.post(url + path, files=files, headers=headers, timeout=60)
    body = {} if method in ("POST", "PUT") else None
    return httpx.request(method, url + path, json=body, headers=headers, timeout=60)


@pytest.fixture()
def keyed(server_env: dict[str, str], tmp_path: Path) -> Any:
    running = Process("serve", server_env | {"QUARRY_API_KEYS": ADMIN}, tmp_path / "server.log")
    running.start()
    yield running
    running.stop()


def test_every_route_refuses_a_key_outside_its_scope(
    keyed: Process, server_env: dict[str, str]
) -> None:
    routes = _routes()
    assert routes == set(EXPECTED), f"routes without an expected scope: {routes ^ set(EXPECTED)}"
    cli_env = server_env | {"QUARRY_API_KEY": ADMIN}
    keys = {
        scope: _cli(
            cli_env,
            "keys",
            "create",
            "--scope",
            scope,
            "--name",
            f"a {scope} key",
            "--api",
            keyed.url,
        )
        for scope in SCOPES
    }
    for scope, made in keys.items():
        assert made["scope"] == scope and made["key"].startswith("qk_")
    for (method, path), needed in sorted(EXPECTED.items()):
        for scope, made in keys.items():
            answer = _call(keyed.url, made["key"], method, path)
            allowed = SCOPES.index(scope) >= SCOPES.index(needed)
            where = f"{scope} key, {method} {path}: {answer.status_code} {answer.text[:200]}"
            if allowed:
                assert answer.status_code not in (401, 403, 429), where
                assert answer.status_code < 500, where
            else:
                assert answer.status_code == 403, where
                message = answer.json()["error"]["message"]
                assert f"needs {needed!r}" in message and made["id"] in message, where
    internal = httpx.get(
        f"{keyed.url}/v1/internal/served/recipe",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert internal.status_code == 401  # a client key, even an admin one, is no worker


def test_collections_revocation_hashing_and_the_audit_log(
    keyed: Process, server_env: dict[str, str], redis_process: Any
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    made = httpx.post(
        f"{keyed.url}/v1/keys",
        json={"name": "team a", "scope": "write", "collections": ["team-a"]},
        headers=admin,
        timeout=10,
    ).json()
    mine = {"Authorization": f"Bearer {made['key']}"}
    ok = httpx.post(
        f"{keyed.url}/v1/search",
        json={"query": "x", "collection": "team-a"},
        headers=mine,
        timeout=60,
    )
    assert ok.status_code in (200, 404), ok.text  # allowed (the collection may not exist)
    other = httpx.post(
        f"{keyed.url}/v1/search",
        json={"query": "x", "collection": "team-b"},
        headers=mine,
        timeout=60,
    )
    assert other.status_code == 403 and "team-b" in other.json()["error"]["message"]
    upload = httpx.post(
        f"{keyed.url}/v1/documents",
        data={"collection": "team-b"},
        files={"files": ("x.txt", b"words")},
        headers=mine,
        timeout=60,
    )
    assert upload.status_code == 403
    theirs = httpx.post(
        f"{keyed.url}/v1/documents",
        data={"collection": "team-b"},
        files={"files": ("b.txt", b"words of b")},
        headers=admin,
        timeout=60,
    )
    job_b = theirs.json()["job_id"]
    ours = httpx.post(
        f"{keyed.url}/v1/documents",
        data={"collection": "team-a"},
        files={"files": ("a.txt", b"words of a")},
        headers=mine,
        timeout=60,
    )
    assert ours.status_code == 202, ours.text
    for method, path in (
        ("GET", f"/v1/jobs/{job_b}"),
        ("DELETE", f"/v1/jobs/{job_b}"),
        ("GET", "/v1/documents?collection=team-b"),
        ("DELETE", "/v1/documents/x?collection=team-b"),
    ):
        refused = httpx.request(method, keyed.url + path, headers=mine, timeout=30)
        assert refused.status_code == 403 and "team-b" in refused.text, (method, path)
    listed_jobs = httpx.get(f"{keyed.url}/v1/jobs", headers=mine, timeout=30).json()["jobs"]
    assert {j["collection"] for j in listed_jobs} == {"team-a"}
    backup = httpx.get(f"{keyed.url}/v1/backup", headers=mine, timeout=10)
    assert backup.status_code == 403
    # Stored by hash only: the key itself is nowhere in Redis.
    client = redis.Redis.from_url(redis_process.url)
    for name in client.scan_iter(count=1000):
        kind = client.type(name)
        values = client.hvals(name) if kind == b"hash" else []
        assert all(made["key"].encode() not in v for v in [name, *values])
    # Revoked without a restart: refused at its next request.
    listed = _cli(server_env | {"QUARRY_API_KEY": ADMIN}, "keys", "list", "--api", keyed.url)
    assert [k["id"] for k in listed] == [made["id"]] and "key" not in listed[0]
    _cli(server_env | {"QUARRY_API_KEY": ADMIN}, "keys", "revoke", made["id"], "--api", keyed.url)
    gone = httpx.post(
        f"{keyed.url}/v1/search",
        json={"query": "x", "collection": "team-a"},
        headers=mine,
        timeout=60,
    )
    assert gone.status_code == 401
    entries = httpx.get(
        f"{keyed.url}/v1/audit", params={"limit": 50}, headers=admin, timeout=10
    ).json()["entries"]
    seen = [(e["key_id"], e["method"], e["path"], e["status"]) for e in entries]
    assert (made["id"], "POST", "/v1/documents", 403) in seen
    assert (made["id"], "GET", "/v1/backup", 403) in seen
    revoked = [e for e in entries if e["path"] == f"/v1/keys/{made['id']}"]
    assert revoked and revoked[0]["status"] == 200 and revoked[0]["key_name"] == "QUARRY_API_KEYS"
    assert all(e["path"] != "/v1/search" for e in entries)  # reads are not audited
    assert entries == sorted(entries, key=lambda e: e["at"], reverse=True)


def _burst(urls: list[str], key: str, clients: int, each: int) -> list[httpx.Response]:
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(index: int) -> None:
        url = urls[index % len(urls)]
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
            start.wait()
            for _ in range(each):
                got = http.get(f"{url}/v1/instructions")
                with lock:
                    answers.append(got)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_limits_hold_across_replicas_under_a_burst_from_several_clients(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    shared = {"QUARRY_API_KEYS": ADMIN, "QUARRY_QUEUE_NAME": "quarry-limits-test"}
    replicas = [
        Process(
            "serve",
            server_env | shared | {"QUARRY_DATA_DIR": str(tmp_path / f"d{i}")},
            tmp_path / f"replica{i}.log",
        )
        for i in range(2)
    ]
    for replica in replicas:
        replica.launch()
    try:
        for replica in replicas:
            replica.wait_ready()
        admin = {"Authorization": f"Bearer {ADMIN}"}
        spec = {
            "name": "bursty",
            "scope": "write",
            "rps": 2,
            "burst": 6,
            "upload_mb_per_hour": 0.05,
        }
        made = httpx.post(f"{replicas[0].url}/v1/keys", json=spec, headers=admin, timeout=10).json()
        started = time.monotonic()
        answers = _burst([r.url for r in replicas], made["key"], clients=6, each=8)
        elapsed = time.monotonic() - started
        passed = [a for a in answers if a.status_code == 200]
        limited = [a for a in answers if a.status_code == 429]
        assert len(passed) + len(limited) == len(answers) == 48
        # One budget over both replicas: the burst, plus what the rate refills meanwhile.
        assert 6 <= len(passed) <= 6 + 2 * elapsed + 1, (len(passed), elapsed)
        assert all(int(a.headers["Retry-After"]) >= 1 for a in limited)
        assert "2 requests a second" in limited[0].json()["error"]["message"]
        time.sleep(3.5)  # the bucket refills: the key works again
        headers = {"Authorization": f"Bearer {made['key']}"}
        upload = httpx.post(
            f"{replicas[1].url}/v1/documents",
            files={"files": ("a.txt", b"heron " * 5000)},
            headers=headers,
            timeout=60,
        )
        assert upload.status_code == 202, upload.text  # 30 kB of the hour's 50 kB
        time.sleep(1)
        again = httpx.post(
            f"{replicas[0].url}/v1/documents",
            files={"files": ("b.txt", b"egret " * 5000)},
            headers=headers,
            timeout=60,
        )
        assert again.status_code == 429 and "MB an hour" in again.json()["error"]["message"]
        assert int(again.headers["Retry-After"]) > 60

        # Chunked (no declared length): charged as received (this one passes the budget),
        # and the next refused while the budget is spent.
        def chunked(name: str, size: int) -> httpx.Response:
            part = (
                f'--zz\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                "Content-Type: text/plain\r\n\r\n"
            ).encode()
            return httpx.post(
                f"{replicas[1].url}/v1/documents",
                headers=headers | {"Content-Type": "multipart/form-data; boundary=zz"},
                content=iter([part, b"ibis " * (size // 5), b"\r\n--zz--\r\n"]),
                timeout=60,
            )

        first = chunked("d.txt", 25_000)
        assert first.status_code == 202, first.text
        time.sleep(1)
        second = chunked("e.txt", 100)
        assert second.status_code == 429 and "MB an hour" in second.text, second.text
        # One upload over the whole hour's budget can never pass: 413, not "wait".
        whole = httpx.post(
            f"{replicas[0].url}/v1/documents",
            files={"files": ("c.txt", b"crane " * 20000)},
            headers=headers,
            timeout=60,
        )
        assert whole.status_code == 413 and "whole hourly" in whole.json()["error"]["message"]
    finally:
        for replica in replicas:
            replica.stop()


def test_a_supervised_workers_key_reads_only_and_opens_nothing(redis_process: Any) -> None:
    """The key a server gives the workers it starts: valid where stored keys are the only
    ones, read scope (the model's routes), and no reason for an open server to want keys."""
    from app.guard import access_control
    from app.keys import Limits

    client = lambda: redis.Redis.from_url(redis_process.url)  # noqa: E731
    control = access_control(frozenset(), client, "quarry-test-worker-key", 1000)
    token = control.worker_key()
    assert control.identify(None).who is not None  # still open: no key was ever made
    control.store.create("ops", "admin", [], Limits())  # type: ignore[union-attr]
    control._stored_seen = (0.0, False)  # (ask Redis again now, not in a second)
    assert control.identify(None).status == 401
    who = control.identify(f"Bearer {token}").who
    assert who is not None and who.scope == "read" and not who.may("write")
    assert control.identify("Bearer qk_not-a-key").status == 401


def test_revoking_every_stored_key_leaves_the_server_closed(
    redis_process: Any, tmp_path: Path
) -> None:
    """Keys once made stay required: all revoked, or the Redis flushed, the server does not
    open up (QUARRY_API_KEYS let an operator back in)."""
    from app.guard import access_control
    from app.keys import Limits

    client = lambda: redis.Redis.from_url(redis_process.url)  # noqa: E731
    marker = tmp_path / "keys-required"
    control = access_control(frozenset(), client, "quarry-test-closed", 1000, marker)
    assert control.identify(None).who is not None  # open: no key was ever made
    _, made = control.store.create("only", "admin", [], Limits())  # type: ignore[union-attr]
    control.store.revoke(made.id)  # type: ignore[union-attr]
    control._stored_seen = (0.0, False)
    assert control.identify(None).status == 401
    for name in client().scan_iter("quarry-test-closed:*"):
        client().delete(name)  # as a FLUSHDB would
    restarted = access_control(frozenset(), client, "quarry-test-closed", 1000, marker)
    assert marker.exists() and restarted.identify(None).status == 401
    elsewhere = access_control(frozenset(), client, "quarry-test-closed", 1000, tmp_path / "x")
    assert elsewhere.identify(None).who is not None  # the check can fail: no marker, no flag
