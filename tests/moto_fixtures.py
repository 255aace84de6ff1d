"""A moto server for the AWS driver tests (simulations/moto.py), one per session; tests
call `reset()` to start from an empty cloud."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulations.moto import REGION, MotoServer, MotoStartError, start_moto

__all__ = ["REGION", "MotoServer", "moto_server"]


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    try:
        server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    except MotoStartError as exc:
        pytest.fail(f"moto_server did not start: {exc}")
    try:
        yield server
    finally:
        server.stop()
