"""Findings 05 and 06 at intake: an image is an OCI reference the cluster will take (no
whitespace, ASCII), refused with the schema's own reason code; accounts named like add-on
namespaces (`*-system`) stay accounts (an existing one must keep ending what it runs), and
the Pod driver keeps their Pods out of namespaces cis did not make."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from schemas.commands import IMAGE, CreateInstance
from schemas.outcomes import Outcome, parse_command
from tests import builders as b

ROOT = Path(__file__).resolve().parent.parent
DIGEST = "sha256:" + "0123456789abcdef" * 4


def _create(image: str = "nginx:1.27", account: str = b.ACCOUNT) -> bytes:
    command = b.create("x", account=account)
    command["containers"][0]["image"] = image
    return json.dumps(command).encode()


def _reasons(result: object) -> list[tuple[str, str | None]]:
    assert isinstance(result, Outcome), result
    return [(r.field, r.code) for r in result.reasons]


@pytest.mark.parametrize("image", [
    "nginx", "nginx:1.27", "library/nginx:latest", "docker.io/library/nginx:1.27-alpine",
    "registry.example/app:1", "localhost:5000/team/app_x__y-z.w:v1.0", f"nginx@{DIGEST}",
    f"ghcr.io/org/app:1.2@{DIGEST}", "Registry.Example.com/a/b", "[::1]:5000/img:2"])
def test_image_references_are_accepted(image: str) -> None:
    assert isinstance(parse_command(_create(image)), CreateInstance)


@pytest.mark.parametrize("image", [
    " nginx ", "nginx ", "\tnginx", "nginx\n", "ngi nx", "Nginx", "nginx:", ":1", "a//b",
    "-nginx", "nginx:-1", "nginx@sha256:abc", "ngïnx", "nginx:1.27\u200b", "nginx\u202e",
    "nginx:" + "t" * 129])
def test_what_the_cluster_would_refuse_is_refused_at_intake(image: str) -> None:
    assert _reasons(parse_command(_create(image))) == [
        ("containers.0.image", "string_pattern_mismatch")]


def test_an_image_stays_bounded() -> None:
    long = "a" * 256
    assert _reasons(parse_command(_create(long))) == [("containers.0.image", "string_too_long")]


def test_every_image_the_repository_uses_still_passes() -> None:
    # The literal images of the tests, demos and simulations (a few are made by format
    # strings: `registry.example/app:{i % 7}` is checked as its values).
    found: set[str] = set()
    files = [ROOT / "README.md", *(p for folder in ("tests", "simulations", "docs", "adapters")
                                   for p in (ROOT / folder).rglob("*"))]
    for path in files:
        if path.suffix in (".py", ".md", ".json", ".jsonl") and path.is_file():
            found.update(re.findall(r'"image": *f?"([^"{]*)"', path.read_text()))
    found.update(f"registry.example/app:{i}" for i in range(7))
    found.discard("")  # a refusal test's empty image
    assert {"nginx", "nginx:1.27", "registry.example/app:1"} <= found
    assert [i for i in sorted(found) if not re.fullmatch(IMAGE, i)] == []
    for image in found:
        assert isinstance(parse_command(_create(image)), CreateInstance), image


@pytest.mark.parametrize("account", ["system", "systems", "system-a", "a-systemd",
                                     "payment-system", "istio-system"])
def test_names_like_system_stay_accounts(account: str) -> None:
    assert isinstance(parse_command(_create(account=account)), CreateInstance)
