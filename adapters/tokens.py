"""Bearer tokens of the query API: scoped to one account or to operator, stored hashed.

A token reads `cis.<id>.<secret>`. The store keeps the id, the scope, the times and the
SHA-256 of the secret, never the secret: only `cis tokens create` ever prints it, once. The
secret has 256 random bits, so one unsalted hash is enough; the digest is compared in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from projections.tables import Row, Table

TOKENS = Table("api_tokens", ("id",), {
    "id": "text", "digest": "text", "scope": "text", "account": "text",
    "created_at": "text", "expires_at": "text", "revoked_at": "text",
})
OPERATOR = "operator"
TOKEN_PATTERN = re.compile(r"cis\.([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")
Failure = Literal["missing", "malformed", "unknown", "expired", "revoked"]


@dataclass(frozen=True)
class Grant:
    """Who a valid token speaks for."""

    token_id: str
    account: str | None  # None: operator, every account

    def may_read(self, account: str) -> bool:
        return self.account is None or self.account == account


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def create(view: Any, account: str | None, expires_at: datetime | None = None,
           now: datetime | None = None) -> tuple[Row, str]:
    """Store a new token for `account` (None: operator); return its row and the token."""
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    row = {"id": token_id, "digest": _digest(secret),
           "scope": OPERATOR if account is None else "account", "account": account,
           "created_at": _iso(now or datetime.now(UTC)),
           "expires_at": _iso(expires_at) if expires_at else None, "revoked_at": None}
    view.put(TOKENS, [row])
    return public(row), f"cis.{token_id}.{secret}"


def public(row: Row) -> Row:
    """A token's row without its digest: what `cis tokens list` shows."""
    return {k: v for k, v in row.items() if k != "digest"}


def listing(view: Any) -> list[Row]:
    return [public(r) for r in view.select(TOKENS)]


def revoke(view: Any, token_id: str, now: datetime | None = None) -> Row | None:
    """Mark a token revoked (kept, so `list` shows when); None if there is no such token."""
    rows = view.select(TOKENS, {"id": token_id})
    if not rows:
        return None
    row = rows[0]
    if row["revoked_at"] is None:
        row = {**row, "revoked_at": _iso(now or datetime.now(UTC))}
        view.put(TOKENS, [row])
    return public(row)


def verify(view: Any, token: str | None, now: datetime | None = None) -> Grant | Failure:
    """The grant of a presented token, or why it grants nothing."""
    if not token:
        return "missing"
    match = TOKEN_PATTERN.fullmatch(token)
    if not match:
        return "malformed"
    token_id, secret = match.groups()
    rows = view.select(TOKENS, {"id": token_id})
    if not rows or not hmac.compare_digest(rows[0]["digest"], _digest(secret)):
        return "unknown"
    row = rows[0]
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] is not None and _time(row["expires_at"]) <= (now or datetime.now(UTC)):
        return "expired"
    return Grant(token_id, None if row["scope"] == OPERATOR else row["account"])
