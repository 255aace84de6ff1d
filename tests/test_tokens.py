"""API tokens on every store: stored hashed, scoped, expiring, revocable; `cis tokens`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from adapters import tokens
from adapters.bootstrap import Engine, connect


def test_a_token_grants_its_scope_until_it_expires_or_is_revoked(engine: Engine) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    row, acme = tokens.create(engine.view, "acme", now + timedelta(days=1), now=now)
    _, operator = tokens.create(engine.view, None, now=now)
    grant = tokens.verify(engine.view, acme, now)
    assert isinstance(grant, tokens.Grant) and grant.account == "acme"
    assert grant.may_read("acme") and not grant.may_read("globex")
    op = tokens.verify(engine.view, operator, now)
    assert isinstance(op, tokens.Grant) and op.may_read("acme") and op.may_read("globex")

    assert tokens.verify(engine.view, acme, now + timedelta(days=1)) == "expired"
    assert tokens.verify(engine.view, None, now) == "missing"
    assert tokens.verify(engine.view, "Bearer " + acme, now) == "malformed"
    forged = acme[:-4] + "AAAA" if not acme.endswith("AAAA") else acme[:-4] + "BBBB"
    assert tokens.verify(engine.view, forged, now) == "unknown"
    revoked = tokens.revoke(engine.view, row["id"], now=now)
    assert revoked is not None and revoked["revoked_at"] == "2030-01-01T00:00:00Z"
    assert tokens.verify(engine.view, acme, now) == "revoked"
    assert tokens.revoke(engine.view, "0" * 16) is None


def test_only_a_digest_of_the_secret_is_stored(engine: Engine) -> None:
    row, token = tokens.create(engine.view, "acme")
    secret = token.split(".")[2]
    (stored,) = engine.view.select(tokens.TOKENS, {"id": row["id"]})
    assert stored["digest"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps(stored)
    assert "digest" not in tokens.listing(engine.view)[0]
    # The tokens outlive a rebuild of the projections.
    engine.rebuild_projections()
    assert isinstance(tokens.verify(engine.view, token), tokens.Grant)


def cis(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from adapters.cli import main; main()",
                           *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_cis_tokens_create_list_revoke(store_url: str) -> None:
    made = cis("tokens", "create", "--account", "acme", "--expires", "30d",
               "--store", store_url)
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["scope"] == "account" and created["token"].startswith("cis.")
    expires = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    listed = cis("tokens", "list", "--store", store_url)
    assert listed.returncode == 0 and created["token"] not in listed.stdout
    assert [json.loads(x)["id"] for x in listed.stdout.splitlines()] == [created["id"]]
    gone = cis("tokens", "revoke", created["id"], "--store", store_url)
    assert gone.returncode == 0 and json.loads(gone.stdout)["revoked_at"]
    with connect(store_url) as engine:
        assert tokens.verify(engine.view, created["token"]) == "revoked"
    assert cis("tokens", "revoke", "0" * 16, "--store", store_url).returncode == 1
    for bad in (["--account", ""], ["--account", "acme", "--operator"], [],
                ["--operator", "--expires", "2001-01-01T00:00:00Z"], ["--operator",
                                                                      "--expires", "soon"]):
        refused = cis("tokens", "create", *bad, "--store", store_url)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, bad
