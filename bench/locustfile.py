"""A deployment's traffic mix for locust: searches (fresh and repeated queries), short and
long /v1/embeddings requests, and small document uploads, each named by its kind.

    locust -f bench/locustfile.py --host http://127.0.0.1:8000
    locust -f bench/locustfile.py --headless -u 8 -r 2 --run-time 10m --host URL \
        --search-weight 60 --embed-long-weight 5 --repeat-share 0.5 --user-rate 1

Its options (locust's --help does not list a locustfile's own): --search-weight 60,
--embed-short-weight 25, --embed-long-weight 5, --upload-weight 10 (shares of the tasks),
--repeat-share 0.5 of searches from a pool of --repeat-pool 100 queries (the embedding
cache's hits), --long-tokens 8192, --short-texts 8 (most texts per short request),
--upload-words 300, --poll-share 0.5 (uploads followed by one GET of their job),
--upload-names 200 (names uploads cycle through: new versions replace documents),
--user-rate 1 (tasks per second per user; 0: no wait), --collection soak, --model (default:
the served one), --seed 0, --max-retry-after 30, --max-requests 0 (no cap), --samples-out
(one JSON line per request; `bench/soak.py` reads them).

With QUARRY_API_KEY set, every request carries it as a bearer key. A 429 is its own
outcome: reported as `<kind> [429]` (not a failure), and the user waits out its Retry-After
before its next task.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from typing import Any

import gevent
import requests
from locust import HttpUser, events, task
from locust.env import Environment
from locust.user.wait_time import constant_throughput

KINDS = ("search:fresh", "search:repeat", "embed:short", "embed:long", "upload", "job")
THROTTLED = " [429]"
# Measured on the documents made of WORDS: 6,146 words were 6,612 tokens for Qwen3's
# tokenizer and 6,662 for MiniLM's WordPiece (real English prose runs nearer 0.75).
WORDS_PER_TOKEN = 0.93

_VOCABULARY = """
the of and to in is that for it as was with be by on not this are or from at which but
have an they you were her she there one all we their has been more when will would who
so no if out up about into than them can only other new some could time these two may
then do first any like now my such make over our even most made after also did many
before must through back years where much your way well down should because each just
those people how too little state good very world still own see men work long here get
both between life being under never day same another know while last might great old
year off come since against go came right used take three states himself few house use
during without again place around however home small found thought went say part once
general high upon school every number course war until always away something fact water
though less public put think almost hand enough far took head yet government system
better set told nothing night end why called didn't eyes find going look asked later
knew point next program city business give group toward young days let room president
side social present given several order national second possible rather per face among
form important often things looking early white case become large need big four within
felt along children saw best church ever least power development light thing seemed
family interest want members mind country area others done turned although open god
service problem certain kind different thus began door help sense means whole matter
perhaps itself york times law human line above name example action company hands local
show whether five history gave today either act feet across taken past quite anything
having seen death experience body word half really week field car words already
information tell together college shall money period held keep sure free seems political
real behind cannot miss question office brought whose special heard major problems ago
became federal moment study available known result street economic boy position reason
change south board individual job areas society west close turn love community true
court force full seem am policy wife future age voice center woman control common
necessary following front sometimes six girl clear further land able feel party music
education provide retrieval embedding infrastructure configuration measurement throughput
latency deployment architecture responsibility international understanding
administration environmental characteristics relationship organization particularly
requirements significantly representation performance implementation distribution
"""
WORDS = _VOCABULARY.split()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("quarry traffic mix")
    for kind, default in (
        ("search", 60.0),
        ("embed-short", 25.0),
        ("embed-long", 5.0),
        ("upload", 10.0),
    ):
        group.add_argument(
            f"--{kind}-weight", type=float, default=default, help=f"share of {kind} tasks"
        )
    group.add_argument(
        "--repeat-share", type=float, default=0.5, help="searches that repeat a known query"
    )
    group.add_argument(
        "--repeat-pool", type=int, default=100, help="distinct queries the repeats come from"
    )
    group.add_argument(
        "--long-tokens", type=int, default=8192, help="size of a long /v1/embeddings document"
    )
    group.add_argument(
        "--short-texts", type=int, default=8, help="most texts in a short embeddings request"
    )
    group.add_argument(
        "--upload-words", type=int, default=300, help="most words in an uploaded document"
    )
    group.add_argument(
        "--poll-share", type=float, default=0.5, help="uploads followed by one job lookup"
    )
    group.add_argument(
        "--upload-names",
        type=int,
        default=200,
        help="file names uploads cycle through (a new version replaces the document, so the "
        "collection stops growing and memory growth means a leak); 0: every upload is new",
    )
    group.add_argument(
        "--user-rate", type=float, default=1.0, help="tasks per second per user (0: no wait)"
    )
    group.add_argument("--collection", default="soak", help="collection searched and filled")
    group.add_argument("--model", default="", help="/v1/embeddings model; default: the served")
    group.add_argument("--seed", type=int, default=0, help="seed of the generated texts")
    group.add_argument(
        "--max-retry-after", type=float, default=30.0, help="longest Retry-After honoured (s)"
    )
    group.add_argument("--max-requests", type=int, default=0, help="stop after this many")
    group.add_argument("--samples-out", default="", help="JSON lines: one per request")


def _headers() -> dict[str, str]:
    key = os.environ.get("QUARRY_API_KEY", "")
    return {"Authorization": f"Bearer {key}"} if key else {}


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choices(WORDS, k=count))


def document(rng: random.Random, count: int, tag: str) -> str:
    """`count` words in paragraphs of sentences, headed by `tag` (which makes it distinct)."""
    paragraphs, left = [f"Document {tag}."], count
    while left > 0:
        sentences = []
        for _ in range(rng.randint(3, 7)):
            size = min(left, rng.randint(6, 24))
            left -= size
            if size:
                sentences.append(words(rng, size).capitalize() + ".")
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs) + "\n"


class _Run:
    """What the whole run shares: the served model, the sample file, the request count."""

    environment: Environment | None = None
    model = ""
    samples: Any = None
    requests = 0


@events.init.add_listener
def _open_samples(environment: Environment, **_: Any) -> None:
    _Run.environment = environment
    options = environment.parsed_options
    if options is None:
        return
    weights = [options.search_weight, options.embed_short_weight, options.embed_long_weight]
    weights.append(options.upload_weight)
    if min(weights) < 0 or sum(weights) <= 0:
        raise ValueError("the --*-weight options: none negative, at least one above 0")
    if not 0 <= options.repeat_share <= 1 or not 0 <= options.poll_share <= 1:
        raise ValueError("--repeat-share and --poll-share are shares from 0 to 1")
    if options.samples_out:
        _Run.samples = open(options.samples_out, "a", buffering=1)  # noqa: SIM115


@events.quit.add_listener
def _close_samples(**_: Any) -> None:
    if _Run.samples is not None:
        _Run.samples.close()
        _Run.samples = None


@events.request.add_listener
def _record(
    name: str,
    response_time: float,
    response: Any = None,
    exception: Any = None,
    start_time: float | None = None,
    **_: Any,
) -> None:
    status = int(getattr(response, "status_code", 0) or 0)
    kind = name.removesuffix(THROTTLED)
    ok = exception is None and status != 429
    if _Run.samples is not None:
        started = start_time or time.time() - response_time / 1000
        line = [round(started, 3), kind, status, round(response_time, 1), ok]
        _Run.samples.write(json.dumps(line) + "\n")
    _Run.requests += 1
    environment = _Run.environment
    options = environment.parsed_options if environment else None
    limit = options.max_requests if options else 0
    if limit and _Run.requests == limit and environment and environment.runner is not None:
        gevent.spawn(environment.runner.quit)


@events.test_start.add_listener
def _prepare(environment: Environment, **_: Any) -> None:
    """Learn the served model and make sure the collection exists (searches of a missing
    one are 404s): one seed document, waited for."""
    options = environment.parsed_options
    assert options is not None  # parsed before any test starts
    base = (environment.host or "").rstrip("/")
    headers = _headers()
    _Run.model = (
        options.model
        or requests.get(f"{base}/v1/models", headers=headers, timeout=30).json()["data"][0]["id"]
    )
    probe = {"query": "seed", "collection": options.collection, "top_k": 1}
    if requests.post(f"{base}/v1/search", json=probe, headers=headers, timeout=60).ok:
        return
    text = document(random.Random(options.seed), 200, "seed")
    answer = requests.post(
        f"{base}/v1/documents",
        files=[("files", ("soak-seed.txt", text.encode(), "text/plain"))],
        data={"collection": options.collection},
        headers=headers,
        timeout=60,
    )
    answer.raise_for_status()
    deadline = time.monotonic() + 300
    job_url = f"{base}/v1/jobs/{answer.json()['job_id']}"
    while requests.get(job_url, headers=headers, timeout=30).json()["state"] not in (
        "done",
        "partial",
        "failed",
        "cancelled",
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the seed document's job {job_url} did not end in 300 s")
        time.sleep(0.5)


class QuarryUser(HttpUser):
    """One client: each task is one request of a kind drawn by the weights."""

    def wait_time(self) -> float:
        rate = float(self.environment.parsed_options.user_rate)
        return constant_throughput(rate)(self) if rate > 0 else 0.0  # its state is on self

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.options = options
        self.client.headers.update(_headers())
        self.tag = uuid.uuid4().hex[:10]  # distinct texts across users and runs
        self.rng = random.Random(f"{options.seed}-{self.tag}")
        self.uploads = 0
        pool = random.Random(options.seed)
        self.pool = [words(pool, pool.randint(3, 9)) for _ in range(max(1, options.repeat_pool))]
        self.kinds = ("search", "embed-short", "embed-long", "upload")
        self.weights = [getattr(options, f"{k.replace('-', '_')}_weight") for k in self.kinds]

    @task
    def one_request(self) -> None:
        [kind] = self.rng.choices(self.kinds, self.weights)
        if kind == "search":
            self.search()
        elif kind == "embed-short":
            count = self.rng.randint(1, max(1, self.options.short_texts))
            texts = [words(self.rng, self.rng.randint(5, 40)) for _ in range(count)]
            self.send("embed:short", "POST", "/v1/embeddings", json=self.embedding(texts))
        elif kind == "embed-long":
            size = int(self.options.long_tokens * WORDS_PER_TOKEN)
            text = document(self.rng, size, f"{self.tag}-long")
            self.send("embed:long", "POST", "/v1/embeddings", json=self.embedding(text))
        else:
            self.upload()

    def search(self) -> None:
        repeat = self.rng.random() < self.options.repeat_share
        query = self.rng.choice(self.pool) if repeat else words(self.rng, self.rng.randint(3, 9))
        body = {"query": query, "collection": self.options.collection, "top_k": 10}
        self.send("search:repeat" if repeat else "search:fresh", "POST", "/v1/search", json=body)

    def embedding(self, texts: str | list[str]) -> dict[str, Any]:
        return {"input": texts, "model": _Run.model}

    def upload(self) -> None:
        self.uploads += 1
        names = self.options.upload_names
        name = (
            f"soak-doc-{self.rng.randrange(names)}.txt"
            if names > 0
            else f"soak-{self.tag}-{self.uploads}.txt"
        )
        text = document(self.rng, self.rng.randint(50, max(50, self.options.upload_words)), name)
        answer = self.send(
            "upload",
            "POST",
            "/v1/documents",
            files=[("files", (name, text.encode(), "text/plain"))],
            data={"collection": self.options.collection},
        )
        if answer is not None and self.rng.random() < self.options.poll_share:
            self.send("job", "GET", f"/v1/jobs/{answer['job_id']}")

    def send(self, kind: str, method: str, path: str, **kwargs: Any) -> Any:
        """One request named by its kind; its JSON answer when it succeeded."""
        with self.client.request(method, path, name=kind, catch_response=True, **kwargs) as r:
            if r.status_code == 429:
                r.request_meta["name"] = kind + THROTTLED
                r.success()
                self.back_off(r.headers.get("Retry-After"))
                return None
            if not r.ok:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return None
            try:
                return r.json()
            except ValueError:
                r.failure("not JSON")
                return None

    def back_off(self, retry_after: str | None) -> None:
        try:
            seconds = float(retry_after or 1)
        except ValueError:
            seconds = 1.0
        time.sleep(min(max(seconds, 0.0), self.options.max_retry_after))
