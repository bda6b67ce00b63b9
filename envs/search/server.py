"""The search service: BM25 over a corpus with tantivy, behind the Search-R1 ``/retrieve`` protocol.

``POST /retrieve`` takes ``{"queries": [...], "topk": k, "return_scores": bool}`` and answers
``{"result": [[{"document": {"id", "contents"}, "score": s}, ...], ...]}``, one list per query, in
order. Without ``return_scores`` each hit is the bare document ``{"id", "contents"}``, as in
Search-R1's retriever (SkyRL-gym's ``search`` tool sends this same request, with scores).
``POST /documents`` takes ``{"ids": [...]}`` and answers ``{"result": [document or null, ...]}``.
``GET /stats`` describes the corpus, its fingerprint (``corpus_sha256``), its index and the
limits; ``GET /health`` answers ``{"status": "ok"}``.

Concurrent ``/retrieve`` requests are coalesced (:class:`Coalescer`, the ``coalesce`` knob of
:func:`create_app`, on by default): requests that arrive while a batch runs, or within
``coalesce_window_ms`` of the first, are searched together in one call spread over
:data:`SEARCH_THREADS` threads (tantivy releases the GIL while it searches) and their answers
fanned back out, each exactly what the request alone gets. This keeps latency flat under many
single-query sessions (no thread hop, no GIL contention per request); ``coalesce=False``
searches each request on its own in FastAPI's thread pool.

Every request is bounded (:data:`MAX_BODY_BYTES`, :data:`MAX_QUERIES`, :data:`MAX_TOPK`,
:data:`MAX_HITS`, :data:`MAX_RESPONSE_BYTES`, each a :func:`create_app` knob): a request over a
limit gets HTTP 413 (sizes) or 422 (fields) with a message naming the limit and the value, and
costs the server no more than the limits allow.

The index is built once per corpus and cached on disk under
``{cache_dir}/search/{sha256 of the corpus}-v{INDEX_VERSION}`` (``cache_dir`` defaults to
``$AGENTENV_CACHE`` or ``~/.cache/agentenv``); a later start opens it in milliseconds. A build
happens in a temporary folder that is removed when the build fails; one left by a builder that
was killed is removed by the next start on the same host.

Queries are plain text: they are split into lowercase alphanumeric words (at most
:data:`MAX_QUERY_TERMS`, duplicates dropped) and scored with BM25 (English stemming) over the
title (boost :data:`TITLE_BOOST`) and the body, so any string is a valid query.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import tantivy
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from agentenv.cache import cache_root
from agentenv.envs.search.tasks import Doc, WorldConfig, build_world, file_sha256, iter_corpus
from agentenv.service import service_app

INDEX_VERSION = 2
MAX_QUERY_TERMS = 64
MAX_BODY_BYTES = 32 * 2**20
"""Largest request body (bytes); a larger one is refused with 413 before it is parsed."""
MAX_QUERIES = 8192
"""Most queries (or ids) in one request: a Search-R1 rollout batch of 1,024 prompts x 8 samples."""
MAX_TOPK = 1000
"""Largest ``topk``."""
MAX_HITS = 65_536
"""Most documents one request may ask for: queries x topk."""
MAX_RESPONSE_BYTES = 64 * 2**20
"""Largest response body (bytes); a request whose answer grows past it gets 413."""
REQUEST_SHAPE = (
    'send {"queries": [str, ...], "topk": int, "return_scores": bool} (Search-R1\'s /retrieve)'
)
TITLE_BOOST = 2.0
SEARCH_THREADS = 4
"""Most threads one index searches a batch of queries with (at most the CPU count)."""
_TERM = re.compile(r"[^\W_]+")
_MAX_TERM_BYTES = 40  # tantivy's default tokenizers drop longer tokens


def sanitize_query(query: str) -> str:
    """``query`` as space-separated lowercase words, safe for tantivy's query parser."""
    seen: dict[str, None] = {}
    for term in _TERM.findall(query.lower()):
        if len(term.encode()) < _MAX_TERM_BYTES:
            seen.setdefault(term, None)
            if len(seen) == MAX_QUERY_TERMS:
                break
    return " ".join(seen)


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("title", tokenizer_name="en_stem", index_option="freq")
    builder.add_text_field("body", tokenizer_name="en_stem", index_option="freq")
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_bytes_field("contents", stored=True)
    return builder.build()


class BM25Index:
    """A tantivy BM25 index of ``{"id", "contents"}`` documents with one shared searcher.

    The title (the first line of ``contents``) and the body are indexed as separate fields; the
    exact ``contents`` is stored and returned.
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.index = tantivy.Index.open(str(path))
        self.searcher = self.index.searcher()
        self.threads = min(SEARCH_THREADS, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def open_or_build(
        cls, docs: Iterable[Doc] | None, key: str, root: Path, *, source: str
    ) -> BM25Index:
        """The cached index named ``key`` under ``root``, built from ``docs`` if missing.

        ``docs`` may be a zero-argument callable producing them (only called on a cache miss).
        Building happens in a private temporary folder renamed into place, so concurrent
        builders never see a partial index; the folder is removed if the build fails, and
        folders of killed builders on this host are removed first.
        """
        final = root / "search" / f"{key}-v{INDEX_VERSION}"
        meta_file = final / "agentenv.json"
        final.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{final.name}.{socket.gethostname()}."
        _remove_orphans(final.parent, prefix)
        if not meta_file.is_file():
            tmp = final.parent / f"{prefix}{os.getpid()}.{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                meta = cls._build(docs() if callable(docs) else docs, tmp, source=source)
                (tmp / "agentenv.json").write_text(json.dumps(meta))
                try:
                    tmp.rename(final)
                except OSError:  # another process finished first
                    if not meta_file.is_file():
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return cls(final, json.loads(meta_file.read_text()))

    @staticmethod
    def _build(docs: Iterable[Doc], path: Path, *, source: str) -> dict[str, Any]:
        start = time.perf_counter()
        index = tantivy.Index(_schema(), path=str(path))
        # One writer thread keeps one segment in corpus order, so equal BM25 scores rank the same
        # way in every build of the same corpus (servers and in-process indexes agree).
        writer = index.writer(1_000_000_000, 1)
        count = 0
        try:
            for doc in docs:
                title, _, body = doc.contents.partition("\n")
                writer.add_document(
                    tantivy.Document(
                        title=title, body=body, id=doc.id, contents=doc.contents.encode()
                    )
                )
                count += 1
            writer.commit()
        finally:
            # Joins the writer's threads: after a failure, nothing writes into ``path`` while it
            # is removed.
            writer.wait_merging_threads()
        return {
            "num_docs": count,
            "source": source,
            "build_seconds": round(time.perf_counter() - start, 3),
        }

    def document(self, doc_id: str) -> dict[str, str] | None:
        """The document ``{"id", "contents"}`` named ``doc_id``, or None."""
        query = tantivy.Query.term_query(self.index.schema, "id", doc_id, index_option="basic")
        searcher = self.searcher
        hits = searcher.search(query, 1, count=False).hits
        if not hits:
            return None
        doc = searcher.doc(hits[0][1])
        return {"id": doc.get_first("id"), "contents": doc.get_first("contents").decode()}

    def search_many(
        self, requests: Sequence[tuple[str, int]]
    ) -> list[list[tuple[dict[str, str], float]]]:
        """:meth:`search` for each ``(query, topk)`` of ``requests``, in order, split into
        contiguous chunks over :attr:`threads` threads (the calling thread takes the first):
        tantivy releases the GIL while it searches, so the chunks run on separate cores."""
        n = min(self.threads, len(requests))
        if n < 2:
            return [self.search(query, k) for query, k in requests]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="agentenv-bm25")
        cuts = [len(requests) * i // n for i in range(n + 1)]
        chunks = [requests[a:b] for a, b in itertools.pairwise(cuts)]
        others = [self._pool.submit(self._search_chunk, chunk) for chunk in chunks[1:]]
        results = self._search_chunk(chunks[0])
        for future in others:
            results.extend(future.result())
        return results

    def _search_chunk(
        self, requests: Sequence[tuple[str, int]]
    ) -> list[list[tuple[dict[str, str], float]]]:
        return [self.search(query, k) for query, k in requests]

    def search(self, query: str, topk: int) -> list[tuple[dict[str, str], float]]:
        """The ``topk`` best documents for ``query`` with their BM25 scores."""
        text = sanitize_query(query)
        if not text or topk <= 0:
            return []
        parsed = self.index.parse_query(
            text, ["title", "body"], field_boosts={"title": TITLE_BOOST}
        )
        searcher = self.searcher
        out = []
        for score, address in searcher.search(parsed, topk, count=False).hits:
            doc = searcher.doc(address)
            out.append(
                (
                    {"id": doc.get_first("id"), "contents": doc.get_first("contents").decode()},
                    float(score),
                )
            )
        return out


def _remove_orphans(folder: Path, prefix: str) -> None:
    """Remove the build folders ``{prefix}{pid}.{tag}`` whose process no longer runs."""
    for path in folder.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


Job = TypeVar("Job")
Result = TypeVar("Result")


@dataclass
class _Lane(Generic[Job, Result]):
    """The jobs waiting in one event loop, and whether a flush is scheduled there."""

    pending: list[tuple[Job, int, asyncio.Future[Result]]] = field(default_factory=list)
    scheduled: bool = False


class Coalescer(Generic[Job, Result]):
    """Runs jobs submitted concurrently on an event loop as batches, from that loop.

    The first job submitted schedules a flush for the loop's next turn (or ``window_s`` later);
    every job submitted by then joins it, up to ``max_weight`` in total (a job heavier than
    that runs alone; the rest wait for the next flush, scheduled at once). A flush calls
    ``run`` once with the batch's jobs, from the loop thread, and ``run`` answers each job
    with its result or its exception, in order; that exception goes to its own caller only
    (an exception of ``run`` itself goes to every caller of the batch). The index search
    releases the GIL, so ``run`` spreads a batch over threads with the loop thread taking a
    share (:meth:`BM25Index.search_many`); a thread hop per request would instead wait for
    the GIL behind the HTTP handling of the requests it serves. Requests that arrive while a
    batch runs queue in the sockets and form the next batch. Each event loop has its own
    queue (an app may be shared by loops).
    """

    def __init__(
        self,
        run: Callable[[list[Job]], list[Result | Exception]],
        *,
        max_weight: int,
        window_s: float = 0.0,
    ) -> None:
        if max_weight < 1:
            raise ValueError(f"max_weight must be >= 1, got {max_weight}")
        self.run = run
        self.max_weight = max_weight
        self.window_s = window_s
        self.batches = 0
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane[Job, Result]] = (
            weakref.WeakKeyDictionary()
        )

    async def submit(self, job: Job, weight: int = 1) -> Result:
        """``run(job)``, computed in a batch with the jobs submitted beside it."""
        loop = asyncio.get_running_loop()
        lane = self._lanes.setdefault(loop, _Lane())
        future: asyncio.Future[Result] = loop.create_future()
        lane.pending.append((job, weight, future))
        if not lane.scheduled:
            lane.scheduled = True
            loop.call_later(self.window_s, self._flush, loop, lane)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop, lane: _Lane[Job, Result]) -> None:
        batch, weight = 0, 0
        for _, job_weight, _ in lane.pending:
            if batch and weight + job_weight > self.max_weight:
                break
            batch, weight = batch + 1, weight + job_weight
        jobs, lane.pending = lane.pending[:batch], lane.pending[batch:]
        jobs = [(job, future) for job, _, future in jobs if not future.cancelled()]
        self.batches += 1
        try:
            results = self.run([job for job, _ in jobs])
        except Exception as exc:
            results = [exc] * len(jobs)
        for (_, future), result in zip(jobs, results, strict=True):
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
        if lane.pending:
            loop.call_soon(self._flush, loop, lane)
        else:
            lane.scheduled = False


class RetrieveRequest(BaseModel):
    """Search-R1 retriever request ``{"queries": [...]}``, or one query ``{"query": "..."}``
    (answered as a one-query batch). ``topk`` defaults to the service's ``topk``.

    Types are strict: ``topk`` must be a JSON integer (not ``3.0``, ``"3"``, ``NaN`` or
    ``Infinity``), ``return_scores`` a JSON boolean, every query a string.
    """

    queries: list[StrictStr] | None = None
    query: StrictStr | None = None
    topk: StrictInt | None = Field(default=None, ge=0)
    return_scores: StrictBool = False

    @model_validator(mode="after")
    def _one_form(self) -> RetrieveRequest:
        if (self.queries is None) == (self.query is None):
            raise ValueError(
                "give exactly one of 'queries' (a list of strings) or 'query' (one string)"
            )
        return self

    @property
    def texts(self) -> list[str]:
        """The queries of the request, in order."""
        return self.queries if self.queries is not None else [self.query]


class DocumentsRequest(BaseModel):
    """Documents by id: ``{"ids": [...]}`` (strings, or integers for integer ids)."""

    ids: list[StrictStr | StrictInt]


class Limits(BaseModel):
    """The bounds of one service (see the module constants)."""

    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1)
    max_queries: int = Field(default=MAX_QUERIES, ge=1)
    max_topk: int = Field(default=MAX_TOPK, ge=1)
    max_hits: int = Field(default=MAX_HITS, ge=1)
    max_response_bytes: int = Field(default=MAX_RESPONSE_BYTES, ge=1)

    def check_retrieve(self, count: int, topk: int) -> None:
        """Raise HTTPException (413 or 422) when ``count`` queries of ``topk`` break a limit."""
        if topk > self.max_topk:
            raise HTTPException(422, f"topk={topk} is over the limit max_topk={self.max_topk}")
        self.check_count(count, "queries")
        if count * topk > self.max_hits:
            raise HTTPException(
                413,
                f"{count} queries x topk {topk} = {count * topk} documents is over the limit "
                f"max_hits={self.max_hits}; send fewer queries per request or a smaller topk",
            )

    def check_count(self, count: int, field: str) -> None:
        if count > self.max_queries:
            raise HTTPException(
                413,
                f"{count} {field} in one request is over the limit max_queries={self.max_queries}",
            )

    def json_body(self, items: Iterator[Any]) -> bytes:
        """``{"result": [item, ...]}`` as JSON bytes, refused with 413 once it grows past
        ``max_response_bytes`` (so a too-large answer is never held whole)."""
        parts, size = [b'{"result": ['], 13
        for i, item in enumerate(items):
            part = (b", " if i else b"") + json.dumps(item, ensure_ascii=False).encode()
            size += len(part)
            if size > self.max_response_bytes:
                raise HTTPException(
                    413,
                    f"the response is over the limit max_response_bytes="
                    f"{self.max_response_bytes} after {i} of its items; ask for fewer "
                    "documents per request",
                )
            parts.append(part)
        parts.append(b"]}")
        return b"".join(parts)


def retrieve_body(
    index: BM25Index, limits: Limits, queries: list[str], k: int, scores: bool
) -> bytes:
    """The ``/retrieve`` answer to ``queries`` (``topk`` ``k``, with or without scores) as JSON."""
    return hits_body(limits, index.search_many([(query, k) for query in queries]), scores)


def hits_body(
    limits: Limits, hits: list[list[tuple[dict[str, str], float]]], scores: bool
) -> bytes:
    """The ``/retrieve`` answer made of the hits of each query, with or without scores."""
    if scores:
        result = ([{"document": d, "score": s} for d, s in h] for h in hits)
    else:
        result = ([d for d, _ in h] for h in hits)
    return limits.json_body(result)


def answer_retrieves(
    index: BM25Index, limits: Limits, jobs: list[tuple[list[str], int, bool]]
) -> list[bytes | Exception]:
    """The answer (or the HTTPException) to each ``(queries, topk, return_scores)`` request of a
    batch, all its queries searched in one :meth:`BM25Index.search_many` call."""
    hits = iter(index.search_many([(query, k) for queries, k, _ in jobs for query in queries]))
    answers: list[bytes | Exception] = []
    for queries, _, scores in jobs:
        mine = list(itertools.islice(hits, len(queries)))
        try:
            answers.append(hits_body(limits, mine, scores))
        except HTTPException as exc:
            answers.append(exc)
    return answers


async def read_retrieve(raw: Request) -> RetrieveRequest:
    """The body of a ``/retrieve`` request, parsed and checked as a FastAPI body parameter is
    (``json.loads``, then the model; the same RequestValidationError), without FastAPI's
    per-request dependency machinery, which costs more than a search."""
    body = await raw.body()
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        position = exc.pos if isinstance(exc, json.JSONDecodeError) else exc.start
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else exc.reason
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", position),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": reason},
                }
            ]
        ) from exc
    try:
        return RetrieveRequest.model_validate(payload, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from exc


def _load_index(
    corpus: str | None, world: WorldConfig, cache_dir: str | None
) -> tuple[BM25Index, str, dict[str, Any] | None]:
    root = cache_root(cache_dir)
    if corpus is not None:
        path = Path(corpus).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"corpus file not found: {path}")
        key = file_sha256(path)
        index = BM25Index.open_or_build(lambda: iter_corpus(path), key, root, source=str(path))
        return index, key, None
    generated = build_world(world)
    key = generated.fingerprint
    index = BM25Index.open_or_build(generated.docs, key, root, source="generated")
    return index, key, asdict(world)


def create_app(
    corpus: str | None = None,
    *,
    seed: int = 0,
    num_entities: int = WorldConfig.num_entities,
    distractors: float = WorldConfig.distractors,
    test_fraction: float = WorldConfig.test_fraction,
    topk: int = 3,
    cache_dir: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_queries: int = MAX_QUERIES,
    max_topk: int = MAX_TOPK,
    max_hits: int = MAX_HITS,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    coalesce: bool = True,
    coalesce_window_ms: float = 0.0,
) -> FastAPI:
    """The search service over ``corpus`` (a corpus JSONL path) or, if None, the generated world
    of the knobs (same defaults as :class:`~agentenv.envs.search.tasks.WorldConfig`, hence as
    ``SearchEnv``). ``topk`` is the default of requests that do not give one; the ``max_*``
    knobs bound every request (see the module constants). ``coalesce`` batches concurrent
    ``/retrieve`` requests (see the module docstring), waiting up to ``coalesce_window_ms`` for
    a batch to fill (0: only what queued while the previous batch ran)."""
    if coalesce_window_ms < 0:
        raise ValueError(f"coalesce_window_ms must be >= 0, got {coalesce_window_ms}")
    limits = Limits(
        max_body_bytes=max_body_bytes,
        max_queries=max_queries,
        max_topk=max_topk,
        max_hits=max_hits,
        max_response_bytes=max_response_bytes,
    )
    if not 0 <= topk <= max_topk:
        raise ValueError(f"topk must be in [0, max_topk={max_topk}], got {topk}")
    world = WorldConfig(seed, num_entities, distractors, test_fraction)
    index, key, world_json = _load_index(corpus, world, cache_dir)
    app = service_app("search", max_body_bytes=limits.max_body_bytes)
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.state.index = index
    lock = threading.Lock()
    served = {"requests": 0, "queries": 0}

    def answer(jobs: list[tuple[list[str], int, bool]]) -> list[bytes | Exception]:
        return answer_retrieves(index, limits, jobs)

    coalescer = Coalescer(answer, max_weight=limits.max_queries, window_s=coalesce_window_ms / 1e3)
    app.state.coalescer = coalescer if coalesce else None

    def count(queries: int) -> None:
        with lock:
            served["requests"] += 1
            served["queries"] += queries

    async def retrieve_coalesced(raw: Request) -> Response:
        request = await read_retrieve(raw)
        k = topk if request.topk is None else request.topk
        queries = request.texts
        limits.check_retrieve(len(queries), k)
        body = await coalescer.submit((queries, k, request.return_scores), len(queries))
        count(len(queries))
        return Response(body, media_type="application/json")

    if coalesce:
        app.add_route("/retrieve", retrieve_coalesced, methods=["POST"])
    else:

        @app.post("/retrieve")
        def retrieve(request: RetrieveRequest) -> Response:
            k = topk if request.topk is None else request.topk
            queries = request.texts
            limits.check_retrieve(len(queries), k)
            body = retrieve_body(index, limits, queries, k, request.return_scores)
            count(len(queries))
            return Response(body, media_type="application/json")

    @app.post("/documents")
    def documents(request: DocumentsRequest) -> Response:
        limits.check_count(len(request.ids), "ids")
        return Response(
            limits.json_body(index.document(str(i)) for i in request.ids),
            media_type="application/json",
        )

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        return {
            **index.meta,
            "corpus_sha256": key,
            "world": world_json,
            "index_dir": str(index.path),
            "topk": topk,
            "limits": limits.model_dump(),
            "served": dict(served),
        }

    return app


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field, without echoing the input (a NaN in it cannot be JSON)."""
    problems = "; ".join(map(_problem, exc.errors()))
    hint = f"; {REQUEST_SHAPE}" if request.url.path == "/retrieve" else ""
    return JSONResponse({"detail": f"invalid request: {problems}{hint}"}, status_code=422)


def _problem(error: dict[str, Any]) -> str:
    """``field: what is wrong`` for one pydantic error of a request body."""
    if error["type"] == "json_invalid":
        reason = error.get("ctx", {}).get("error", error["msg"])
        return f"body: invalid JSON at character {error['loc'][-1]} ({reason})"
    return f"{'.'.join(str(p) for p in error['loc'][1:]) or 'body'}: {error['msg']}"
