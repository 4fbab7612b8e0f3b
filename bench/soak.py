"""A bounded soak: `bench/locustfile.py` headless against a server for a set time, while the
server's process tree (PSS, descriptors) and queues (/metrics) are sampled; then latency
per request kind, errors, 429s, throughput, p99 early against late, and growth per hour.

    python bench/soak.py --duration 30m --users 8        # its own `quarry serve`
    python bench/soak.py --host http://127.0.0.1:8000 --duration 2h --json soak.json

Options it does not know go to the locustfile (`--search-weight 40 --long-tokens 4096`;
its docstring lists them). With no --host it starts `quarry serve` on a
free loopback port in a temporary data dir (the environment's QUARRY_* settings apply,
offline) and stops it at the end. QUARRY_API_KEY, when set, is sent as a bearer key.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

# This folder has files named like the project's packages (ingest.py): keep it off the path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil

from bench.soak_stats import Request, ServerSample, render, summary

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
# The gauges that show work piling up (app/metrics.py), and the embedding cache's counters.
GAUGES = (
    "quarry_cache_hits_total",
    "quarry_cache_misses_total",
    "quarry_http_requests_in_flight",
    "quarry_batch_queue_depth",
    "quarry_ingest_queue_depth",
    "quarry_ingest_files_queued",
    "quarry_ingest_files_scheduled",
    "quarry_ingest_files_in_flight",
)
MAX_DURATION_S = 7 * 24 * 3600


def seconds(text: str) -> float:
    """`90`, `90s`, `30m`, `2h`, `1h30m` in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms]?)", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise argparse.ArgumentTypeError(f"{text!r}: a duration like 90s, 30m or 1h30m")
    total = sum(float(n) * {"h": 3600, "m": 60, "s": 1, "": 1}[u] for n, u in parts)
    if not 0 < total <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"{text!r}: from 1 s to {MAX_DURATION_S // 3600} h")
    return total


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--host", help="the server's URL; default: start one here")
    p.add_argument("--duration", type=seconds, default="30m", help="load time (default 30m)")
    p.add_argument("--users", type=int, default=8, help="simulated clients (default 8)")
    p.add_argument("--spawn-rate", type=float, default=2.0, help="users started per second")
    p.add_argument(
        "--max-requests", type=int, default=1_000_000, help="stop after this many (at least 1)"
    )
    p.add_argument("--sample-every", type=float, default=5.0, help="server samples' interval")
    p.add_argument(
        "--warmup",
        type=seconds,
        help="left out of the growth fit; default a fifth of the run, from 1m to 5m",
    )
    p.add_argument("--model", help="QUARRY_EMBEDDING_MODEL of the server started here")
    p.add_argument("--server-pid", type=int, help="the --host server's pid (default: found)")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON ('-': stdout)")
    return p


def loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _auth() -> dict[str, str]:
    key = os.environ.get("QUARRY_API_KEY", "")
    return {"Authorization": f"Bearer {key}"} if key else {}


@contextmanager
def own_server(folder: Path, model: str | None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`quarry serve` on a free loopback port over a fresh data dir, until the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = dict(os.environ, QUARRY_DATA_DIR=str(folder / "data"))
    env.setdefault("HF_HUB_OFFLINE", "1")  # a bench downloads nothing
    if model:
        env["QUARRY_EMBEDDING_MODEL"] = model
    log = folder / "server.log"
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
    with log.open("ab") as out:
        server = subprocess.Popen(
            [*command, "--port", str(port)], env=env, cwd=folder, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while not _ready(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"quarry serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, server
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5, headers=_auth()).status_code == 200
    except httpx.HTTPError:
        return False


def listening_pid(url: str) -> int | None:
    """The pid that listens on the URL's port on this machine, if it can be seen."""
    port = urlsplit(url).port or 80
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    except psutil.Error:
        pass
    return None


def gauges(url: str) -> dict[str, float]:
    """The queue gauges, one value per label set (`quarry_batch_queue_depth{search}`)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"{url}/metrics", timeout=10, headers=_auth()).text
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in GAUGES:
                    label = ",".join(v for k, v in sorted(sample.labels.items()) if k != "worker")
                    name = f"{sample.name}{{{label}}}" if label else sample.name
                    values[name] = values.get(name, 0.0) + sample.value
        return values
    except (httpx.HTTPError, ValueError):
        return {}


def process_tree(pid: int | None, at: float, url: str) -> ServerSample:
    """PSS, descriptors and open files of the server and all its descendants."""
    procs: list[psutil.Process] = []
    if pid is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
    pss = fds = files = 0
    by_process: dict[str, float] = {}
    for proc in procs:
        try:
            mb = proc.memory_full_info().pss / 2**20  # shared pages counted once
            fds += proc.num_fds()
            files += len(proc.open_files())
            command = proc.cmdline()
        except psutil.Error:
            continue
        pss += mb
        by_process[f"{proc.pid} {_label(command) or proc.name()}"] = mb
    return ServerSample(at, len(procs), pss, fds, files, gauges(url), by_process)


def _label(command: list[str]) -> str:
    """`python -m app.cli serve`, `python -c from multiprocessing.forkserver import main`."""
    if not command:
        return ""
    words = [Path(command[0]).name]
    for flag in ("-m", "-c"):
        if flag in command[:-1]:
            at = command.index(flag)
            words += [flag, command[at + 1].split(";")[0], *command[at + 2 : at + 3]]
            break
    else:
        words += command[1:3]
    return " ".join(words)[:60]


def read_new(path: Path, offset: int, into: list[Request]) -> int:
    """Append the complete sample lines written since `offset`; the new offset."""
    if not path.exists():
        return offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    into.extend(Request.from_row(json.loads(line)) for line in complete.splitlines() if line)
    return offset + len(complete)


def soak(args: argparse.Namespace, url: str, pid: int | None, work: Path, extra: list[str]) -> int:
    samples_path = work / "requests.jsonl"
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", url,
        "--users", str(args.users),
        "--spawn-rate", str(args.spawn_rate),
        "--run-time", f"{round(args.duration)}s",
        "--stop-timeout", "15",
        "--only-summary",
        "--samples-out", str(samples_path),
        "--max-requests", str(args.max_requests),
        *extra,
    ]  # fmt: skip
    log = work / "locust.log"
    print(f"soak: {args.users} users against {url} for {args.duration:.0f} s", flush=True)
    with log.open("ab") as out:
        load = subprocess.Popen(command, stdout=out, stderr=out, cwd=work)
    started = time.monotonic()
    deadline = started + args.duration + 420  # seeding the collection and stopping take a while
    requests: list[Request] = []
    server: list[ServerSample] = []
    offset, next_sample, next_note = 0, started, started + 60
    while load.poll() is None:
        now = time.monotonic()
        if now > deadline:
            load.terminate()
            load.wait(30)
            break
        if now >= next_sample:
            server.append(process_tree(pid, now - started, url))
            next_sample += args.sample_every
            offset = read_new(samples_path, offset, requests)
        if now >= next_note:
            next_note += 60
            _note(now - started, requests, server[-1] if server else None)
        time.sleep(min(0.5, max(0.0, next_sample - time.monotonic())))
    read_new(samples_path, offset, requests)
    if load.returncode not in (0, 1) or not requests:  # 1: some requests failed
        print(f"locust ended with {load.returncode}:\n{log.read_text()[-3000:]}", file=sys.stderr)
        return 1
    elapsed = max(r.started + r.ms / 1000 for r in requests) - min(r.started for r in requests)
    # The server starts its worker and parse processes on the first upload: a minute at least.
    warmup = args.warmup if args.warmup is not None else min(300.0, max(60.0, args.duration / 5))
    report = summary(requests, server, max(elapsed, 1e-3), warmup)
    report |= {"host": url, "users": args.users, "duration_s": args.duration}
    if args.json == "-":
        print(json.dumps(report, indent=1))
    else:
        print(render(report))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def _note(at: float, requests: list[Request], sample: ServerSample | None) -> None:
    failed = sum(not r.ok and r.status != 429 for r in requests)
    line = f"  {at / 60:5.1f} min: {len(requests)} requests, {failed} failed"
    if sample is not None:
        line += f"; server PSS {sample.pss_mb:.0f} MB, {sample.fds} fds"
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    if args.host and not loopback(args.host):  # a load generator aimed at nobody else
        print(
            f"soak: {args.host} is not a loopback address: it loads this machine only",
            file=sys.stderr,
        )
        return 2
    if args.max_requests < 1:
        print("soak: --max-requests must be at least 1 (a soak is bounded)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="quarry-soak-") as temp:
        work = Path(temp)
        if args.host:
            url = args.host.rstrip("/")
            pid = args.server_pid or (listening_pid(url) if loopback(url) else None)
            if pid is None:
                print("soak: the server's pid is unknown: no PSS or fd samples", file=sys.stderr)
            return soak(args, url, pid, work, extra)
        with own_server(work, args.model) as (url, server):
            code = soak(args, url, server.pid, work, extra)
            if server.poll() is not None:
                print(f"soak: the server exited ({server.returncode}) during the run")
                return 1
            return code


if __name__ == "__main__":
    sys.exit(main())
