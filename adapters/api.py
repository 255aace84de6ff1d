"""The HTTP query API: read-only answers from the projections (`cis api`).

For operators, and for the tenant-facing gateway in front of it, which authenticates tenants
and passes their account in the path: this process does no authentication. It never writes:
`cis serve` (or `cis project`) keeps the projections current, and every answer says how far
they have followed the log (`projected`), which is also the default `as_of`, so an answer is
always one consistent point of the log, never the wall clock. OpenAPI at `/openapi.json`.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Path, Query
from pydantic import AwareDatetime

from adapters import queries
from adapters.bootstrap import Engine, connect
from projections.instances import iso
from projections.runner import position
from schemas.views import (
    ExplainReport,
    InstancesReport,
    InvoicesReport,
    Projected,
    UsageReport,
)

T = TypeVar("T")
Account = Annotated[str, Path(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
                              description="the tenant's account")]
AsOf = Annotated[AwareDatetime | None, Query(
    description="accrue open invoices up to this time (default: the projected position)")]
Period = Annotated[str | None, Query(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
                                     description="a calendar month, YYYY-MM (UTC)")]


def projected(engine: Engine) -> tuple[Projected, datetime | None]:
    """The position every projection has reached, and its event's time."""
    reached = min((position(engine.view, p) for p in engine.projections), default=0)
    at = queries.event_time(engine, reached)
    return Projected(position=reached, at=iso(at) if at else None), at


def create_app(store: str) -> FastAPI:
    engines: list[Engine] = []
    # The engine's SQLite connections are not for concurrent threads; one query at a time
    # keeps every store safe (queries take milliseconds).
    lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engines.append(connect(store))
        try:
            yield
        finally:
            engines.pop().close()

    app = FastAPI(title="CIS query API", version="1", lifespan=lifespan,
                  description=__doc__.split("\n\n", 1)[1] if __doc__ else None)

    def answer(query: Callable[[Engine, Projected, datetime | None], T]) -> T:
        with lock:
            engine = engines[0]
            where, at = projected(engine)
            return query(engine, where, at)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        """Up, and how far the projections have followed the log."""
        return answer(lambda e, where, _: {"status": "ok", "projected": where.model_dump()})

    @app.get("/v1/accounts/{account}/instances")
    def instances(account: Account) -> InstancesReport:
        """The account's instances: state, node, requested and billed spec, times."""
        return answer(lambda e, where, _: InstancesReport(
            account=account, projected=where, instances=queries.instances(e, account)))

    @app.get("/v1/accounts/{account}/usage")
    def usage(account: Account, as_of: AsOf = None) -> UsageReport:
        """Billed seconds and amounts per instance, accrued up to `as_of`."""
        return answer(lambda e, where, at: UsageReport(
            **queries.usage(e, account, as_of or at), projected=where))

    # Open and finalised invoices carry different fields (as_of; finalised_at, hash_verified).
    @app.get("/v1/accounts/{account}/invoices", response_model_exclude_none=True)
    def invoices(account: Account, period: Period = None, as_of: AsOf = None
                 ) -> InvoicesReport:
        """Finalised invoices as recorded (content hash re-checked), open ones accrued."""
        return answer(lambda e, where, at: InvoicesReport(
            **queries.invoices(e, account, period, as_of or at), projected=where))

    @app.get("/v1/accounts/{account}/invoices/explain")
    def explain(account: Account,
                line: Annotated[str, Query(min_length=1, max_length=200, description=(
                    "N (the N-th line of the period's invoice) or INSTANCE[@VERSION]"))],
                period: Period = None, as_of: AsOf = None) -> ExplainReport:
        """The events that opened and closed each billed interval of an invoice line."""
        return answer(lambda e, where, at: ExplainReport(
            account=account, projected=where,
            lines=queries.explain(e, account, line, period, as_of or at)))

    return app


def serve_api(store: str, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    uvicorn.run(create_app(store), host=host, port=port, log_level=log_level)
