"""The HTTP query API: read-only answers from the projections (`cis api`).

Every `/v1/accounts/{account}/…` route needs `Authorization: Bearer <token>`: a token of that
account, or an operator token (`cis tokens create`). Missing, unknown, expired or revoked
tokens get 401, another account's token 403; `/v1/nodes` (the fleet) needs an operator token
(an account's gets 403); every error is RFC 9457 problem+json. It never
writes: `cis serve` (or `cis project`) keeps the projections current, and every answer says
how far they have followed the log (`projected`); the default `as_of` is the newest clock of
the account's cells up to there, so an answer is always one consistent point of the log,
never the wall clock. `known_at` answers as at an earlier time, from the events recorded up
to it only. Lists are paged
(`limit`, `cursor`; `next` is the cursor of the following page). OpenAPI at `/openapi.json`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Path, Query, Request, Response, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel
from starlette.exceptions import HTTPException

from adapters import queries, tokens
from adapters.bootstrap import Engine, connect
from adapters.metrics import HttpMetrics, exposition, new_registry
from projections.instances import iso
from projections.nodes import NODE_STATES
from schemas.views import (
    ExplainReport,
    Health,
    InstancesReport,
    InvoicesReport,
    NodesReport,
    Problem,
    Projected,
    UsageReport,
)

R = TypeVar("R")
log = logging.getLogger("cis.api")
PROBLEM = "application/problem+json"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Threads answering account queries at once, and the few kept for /v1/health so it never
# waits behind them. Each may hold two store connections (snapshot, event time). Queries are
# CPU-bound Python: more threads only share the GIL more finely, and 3 instead of 6 cut the
# health p99 under 50 readers from 140 to 56 ms with more throughput (`cis bench api`).
QUERY_THREADS = 3
HEALTH_THREADS = 2
AUTH_THREADS = 2  # token checks: one primary-key select each
# `known_at` / `known_position` fold an account's cells from the log on each call (seconds,
# not milliseconds): they get a lane of their own, so one tenant's audits never hold the
# threads every tenant's plain queries need.
AUDIT_THREADS = 1
PG_POOL = {"POSTGRES_POOL_SIZE": "4",
           "POSTGRES_MAX_OVERFLOW": str(2 * (QUERY_THREADS + HEALTH_THREADS + AUDIT_THREADS)
                                        + AUTH_THREADS - 4)}
UNAUTHORISED = {"missing": "no bearer token", "malformed": "not a token this service issued",
                "unknown": "unknown token", "expired": "the token has expired",
                "revoked": "the token was revoked"}

Account = Annotated[str, Path(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
                              description="the tenant's account")]
AsOf = Annotated[AwareDatetime | None, Query(
    description="accrue open invoices up to this time (default: the newest clock of the "
    "account's cells that the projections have reached); "
    "inside [TIME_MIN, TIME_MAX) and at most QUERY_AS_OF_AHEAD past the projected position")]
MAX_POSITION = 10**18  # a notification id: any store's 64-bit integer holds it
KnownAt = Annotated[AwareDatetime | None, Query(
    description="answer exactly as at this time: from the events recorded up to it only "
    "(each cell's log up to its last batch stamped at or before it); the default as_of is "
    "then the newest clock of the account's cells known at that time")]
KnownPosition = Annotated[int | None, Query(
    ge=1, le=MAX_POSITION, description="like known_at, at a log position (the "
    "`projected.position` an earlier answer gave): a late report moves no clock, so only "
    "a position tells the answer just before it from the one just after")]


def known_moment(known_at: KnownAt = None, known_position: KnownPosition = None
                 ) -> datetime | int | None:
    """The moment an answer is asked as of: a log position or a time, not both (which
    would it be?)."""
    if known_at is not None and known_position is not None:
        raise queries.QueryError([("known_position", "give known_at or known_position, "
                                                     "not both")])
    return known_position if known_position is not None else known_at


KnownMoment = Annotated[datetime | int | None, Depends(known_moment)]
Period = Annotated[str | None, Query(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
                                     description="a calendar month, YYYY-MM (UTC)")]
Name = Annotated[str | None, Query(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
NodeState = Annotated[Literal[NODE_STATES] | None, Query(  # type: ignore[valid-type]
    description="only nodes in this state")]
Limit = Annotated[int, Query(ge=1, le=queries.QUERY_PAGE_MAX,
                             description="items per page (QUERY_PAGE_MAX at most)")]
Cursor = Annotated[str | None, Query(max_length=1024, pattern=r"^[A-Za-z0-9_-]+$",
                                     description="`next` of the previous page")]
bearer = HTTPBearer(auto_error=False, description="`cis tokens create`: an account's token, "
                    "or an operator token")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text, "content": {PROBLEM: {}}}
    for code, text in [(401, "no valid token"), (403, "a token of another account"),
                       (422, "a bad or too costly query"), (503, "no answer in time")]}


class ApiProblem(Exception):
    def __init__(self, status: int, title: str, detail: str | None = None,
                 errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail or title)
        self.problem = Problem(title=title, status=status, detail=detail, errors=errors)
        self.headers = headers


def problem(status: int, title: str, detail: str | None = None,
            errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status, headers=headers,
                        media_type=PROBLEM)


QueryFn = Callable[[queries.Reader, Projected, datetime | None], BaseModel]


@dataclass(frozen=True)
class Snapshot:
    """What one request reads: the projections as of one transaction, and the event log
    (append-only, so reading it beside the snapshot is consistent)."""

    view: Any
    app: Any


def projected(reader: queries.Reader, names: list[str]) -> tuple[Projected, datetime | None]:
    """The position every projection has reached, and its event's time."""
    reached = min(reader.view.positions(names).values(), default=0)
    at = queries.event_time(reader, reached)
    return Projected(position=reached, at=iso(at) if at else None), at


def create_app(store: str) -> FastAPI:
    engines: list[Engine] = []
    query_threads = anyio.CapacityLimiter(QUERY_THREADS)
    health_threads = anyio.CapacityLimiter(HEALTH_THREADS)
    auth_threads = anyio.CapacityLimiter(AUTH_THREADS)
    audit_threads = anyio.CapacityLimiter(AUDIT_THREADS)
    registry = new_registry()
    metrics = HttpMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engines.append(connect(store, PG_POOL))
        try:
            yield
        finally:
            engines.pop().close()

    app = FastAPI(title="CIS query API", version="1", lifespan=lifespan,
                  description=__doc__.split("\n\n", 1)[1] if __doc__ else None)

    # A slot is held until the thread's work ends, not until its caller gives up: the
    # limiter lets go of an abandoned thread at the time-out, so it alone would let
    # stragglers pile up without bound.
    slots = {id(limiter): threading.BoundedSemaphore(int(limiter.total_tokens))
             for limiter in (query_threads, health_threads, auth_threads, audit_threads)}

    async def in_thread(threads: anyio.CapacityLimiter, fn: Callable[..., R], *args: Any
                        ) -> R:
        # The thread cannot be stopped, but the client gets its answer at the limit.
        slot = slots[id(threads)]
        with anyio.move_on_after(queries.QUERY_TIMEOUT_S):
            while not slot.acquire(blocking=False):  # every slot busy, maybe abandoned
                await anyio.sleep(0.005)

            started = threading.Event()
            once = threading.Lock()

            def release() -> None:
                if once.acquire(blocking=False):  # exactly once, whoever gets here first
                    slot.release()

            def run() -> R:
                started.set()
                try:
                    return fn(*args)
                finally:
                    release()

            try:
                return await anyio.to_thread.run_sync(run, limiter=threads,
                                                      abandon_on_cancel=True)
            except BaseException:
                if not started.is_set():  # cancelled before a thread took it
                    release()
                raise
        raise ApiProblem(503, "Service Unavailable", "no answer within QUERY_TIMEOUT_S "
                         f"({queries.QUERY_TIMEOUT_S:g} s)", headers={"Retry-After": "5"})

    def verify(token: str | None) -> tokens.Grant | tokens.Failure:
        with engines[0].view.snapshot() as view:
            return tokens.verify(view, token)

    async def authorised(account: Account, credentials: Credentials) -> tokens.Grant:
        """A dependency, so FastAPI runs it before it validates the query: a request without
        a valid token learns nothing else (401 or 403 whatever it asked)."""
        verdict = await in_thread(auth_threads, verify,
                                  credentials.credentials if credentials else None)
        if isinstance(verdict, str):
            raise ApiProblem(401, "Unauthorized", UNAUTHORISED[verdict],
                             headers={"WWW-Authenticate": "Bearer"})
        if not verdict.may_read(account):
            raise ApiProblem(403, "Forbidden", "the token is for another account")
        return verdict

    async def operator_only(credentials: Credentials) -> tokens.Grant:
        """Operator routes (every account's data, and the fleet): an operator token."""
        verdict = await in_thread(auth_threads, verify,
                                  credentials.credentials if credentials else None)
        if isinstance(verdict, str):
            raise ApiProblem(401, "Unauthorized", UNAUTHORISED[verdict],
                             headers={"WWW-Authenticate": "Bearer"})
        if verdict.account is not None:
            raise ApiProblem(403, "Forbidden", "an operator token is needed")
        return verdict

    # A default, not an Annotated alias: route annotations are strings, resolved at module
    # level, where this closure is not.
    needs_token = Depends(authorised)
    needs_operator = Depends(operator_only)

    def read(query: QueryFn, exclude_none: bool) -> Response:
        engine = engines[0]
        with engine.view.snapshot() as view:
            reader = Snapshot(view, engine.app)
            where, at = projected(reader, [p.name for p in engine.projections])
            report = query(reader, where, at)
        # Serialised here, not on the event loop: a big answer must not delay the others.
        return Response(report.model_dump_json(exclude_none=exclude_none),
                        media_type="application/json")

    async def answer(query: QueryFn, threads: anyio.CapacityLimiter = query_threads,
                     exclude_none: bool = False, known: object = None) -> Response:
        lane = audit_threads if known is not None else threads
        return await in_thread(lane, read, query, exclude_none)

    def as_of_or(as_of: datetime | None, at: datetime | None) -> datetime | None:
        """A given `as_of`, checked; None leaves the default to the query: the newest clock
        of the account's cells the read models have reached."""
        if as_of is not None:
            queries.check_as_of(as_of, at)
        return as_of

    def as_known(r: queries.Reader, known: datetime | int | None, account: str
                 ) -> queries.Reader:
        return r if known is None else queries.known_at(r, known, account)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                      ) -> Response:
        start, status = time.perf_counter(), 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            # Methods are the client's to invent: one label per made-up method would grow
            # the registry without bound, and no token is needed to send one.
            method = request.method if request.method in HTTP_METHODS else "OTHER"
            metrics.observe(route, method, status, time.perf_counter() - start)

    @app.exception_handler(ApiProblem)
    async def on_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return JSONResponse(exc.problem.model_dump(exclude_none=True), exc.problem.status,
                            headers=exc.headers, media_type=PROBLEM)

    @app.exception_handler(queries.QueryError)
    async def on_query_error(request: Request, exc: queries.QueryError) -> JSONResponse:
        return problem(422, "Unprocessable Content", str(exc), [
            {"loc": ["query", field], "msg": text, "type": "query_bound"}
            for field, text in exc.reasons])

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        return problem(422, "Unprocessable Content", "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors),
            jsonable_encoder(errors))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("answering %s", request.url.path)  # the trace stays in the log
        return problem(500, "Internal Server Error", "see the server log")

    @app.get("/v1/health", response_model=Health)
    async def health() -> Response:
        """Up, and how far the projections have followed the log. Open to all: it tells
        only the log position and that event's time, nothing of any account."""
        return await answer(lambda r, where, _: Health(projected=where), health_threads)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        """Request latency by route and status, requests by status (no account data)."""
        body, kind = exposition(registry)
        return Response(body, media_type=kind)

    @app.get("/v1/accounts/{account}/instances", responses=PROBLEMS,
             response_model=InstancesReport)
    async def instances(account: Account, limit: Limit = queries.QUERY_PAGE_DEFAULT,
                        cursor: Cursor = None, known: KnownMoment = None,
                        _: tokens.Grant = needs_token) -> Response:
        """The account's instances: state, node, requested and billed spec, times."""
        def query(r: queries.Reader, where: Projected, _: datetime | None) -> InstancesReport:
            rows, after = queries.page(queries.instances(as_known(r, known, account),
                                                         account), lambda x: [x["id"]],
                                       cursor, limit)
            return InstancesReport(account=account, projected=where, instances=rows,
                                   next=after)
        return await answer(query, known=known)

    @app.get("/v1/nodes", responses=PROBLEMS, response_model=NodesReport)
    async def nodes(cell: Name = None, pool: Name = None, state: NodeState = None,
                    limit: Limit = queries.QUERY_PAGE_DEFAULT, cursor: Cursor = None,
                    _: tokens.Grant = needs_operator) -> Response:
        """Every node (operator token only): model, pool, ASG, state, hold, allocation per
        dimension, the instances on it, and idle time up to the projected position."""
        def query(r: queries.Reader, where: Projected, at: datetime | None) -> NodesReport:
            rows, after = queries.page(queries.nodes(r, cell, pool, state, at),
                                       lambda x: [x["cell"], x["node_id"]], cursor, limit)
            return NodesReport(projected=where, nodes=rows, next=after)
        return await answer(query)

    @app.get("/v1/accounts/{account}/usage", responses=PROBLEMS, response_model=UsageReport)
    async def usage(account: Account, as_of: AsOf = None, known: KnownMoment = None,
                    limit: Limit = queries.QUERY_PAGE_DEFAULT, cursor: Cursor = None,
                    _: tokens.Grant = needs_token) -> Response:
        """Billed seconds and amounts per instance, accrued up to `as_of`."""
        def query(r: queries.Reader, where: Projected, at: datetime | None) -> UsageReport:
            report = queries.usage(as_known(r, known, account), account,
                                   as_of_or(as_of, at))
            report["instances"], after = queries.page(
                report["instances"], lambda x: [x["cell"], x["instance_id"]], cursor, limit)
            return UsageReport(**report, projected=where, next=after)
        return await answer(query, known=known)

    # Open and finalised invoices carry different fields (as_of; finalised_at, hash_verified).
    @app.get("/v1/accounts/{account}/invoices", response_model=InvoicesReport,
             responses=PROBLEMS)
    async def invoices(account: Account, period: Period = None, as_of: AsOf = None,
                       known: KnownMoment = None,
                       limit: Limit = queries.QUERY_PAGE_DEFAULT, cursor: Cursor = None,
                       _: tokens.Grant = needs_token) -> Response:
        """Finalised invoices as recorded (content hash re-checked), open ones accrued."""
        def query(r: queries.Reader, where: Projected, at: datetime | None) -> InvoicesReport:
            report = queries.invoices(as_known(r, known, account), account, period,
                                      as_of_or(as_of, at))
            report["invoices"], after = queries.page(
                report["invoices"], lambda x: [x["period"], x["cell"], x["status"]], cursor,
                limit)
            return InvoicesReport(**report, projected=where, next=after)
        return await answer(query, exclude_none=True, known=known)

    @app.get("/v1/accounts/{account}/invoices/explain", responses=PROBLEMS,
             response_model=ExplainReport)
    async def explain(account: Account,
                      line: Annotated[str, Query(
                          pattern=f"^(?:{queries.LINE_REF.pattern})$", description=(
                              "N (the N-th line of the period's invoice) or "
                              "INSTANCE[@VERSION]"))],
                      period: Period = None, as_of: AsOf = None, known: KnownMoment = None,
                      _: tokens.Grant = needs_token) -> Response:
        """Provenance of an invoice line or adjustment, adding up to it: the events that
        opened and closed each billed interval, its seconds and top-up."""
        return await answer(lambda r, where, at: ExplainReport(
            account=account, projected=where,
            lines=queries.explain(as_known(r, known, account), account, line, period,
                                  as_of_or(as_of, at))), known=known)

    return app


def serve_api(store: str, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    # Short requests (health, a page of instances) wait for the GIL while a long query
    # computes; switching threads every 1 ms instead of 5 ms keeps their latency down.
    sys.setswitchinterval(0.001)
    uvicorn.run(create_app(store), host=host, port=port, log_level=log_level)
