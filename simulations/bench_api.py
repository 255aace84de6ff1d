"""Benchmark: latency of `cis api` under 50 concurrent readers, with and without one heavy
query running, and of `/v1/health` meanwhile.

A store (a temporary SQLite file unless --store is given) is filled with the demo's tenants
through the real engine (`simulations.workloads.simulate`), projected, and given an operator
token. `cis api` then runs in a process of its own on a loopback port (so the clients' own
Python does not share its interpreter), and three phases of `seconds` each are timed:

- `readers`: 50 clients, each reading invoices or instances of an account in turn;
- `readers_with_heavy`: the same, while one more client repeats the heaviest query the bounds
  allow (invoices of the busiest account, `as_of` QUERY_AS_OF_AHEAD past the projected
  position);
- `health_with_heavy`: only the heavy query, and `/v1/health`.

In each phase a prober asks `/v1/health` every 20 ms. Latencies are client-side wall time
(perf_counter), in milliseconds.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from adapters import queries, tokens
from adapters.bootstrap import connect
from simulations.workloads import simulate

ACCOUNTS = ("acme", "globex", "initech")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quantiles(ms: list[float]) -> dict[str, Any]:
    if not ms:
        return {"n": 0}
    s = sorted(ms)
    return {"n": len(s), "p50_ms": round(s[len(s) // 2], 2),
            "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))], 2),
            "max_ms": round(s[-1], 2)}


class Client:
    def __init__(self, port: int, token: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> tuple[int, float]:
        start = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        response.read()
        return response.status, (time.perf_counter() - start) * 1000


def _loop(port: int, token: str, stop: threading.Event, paths: Callable[[int], str],
          out: list[float], statuses: dict[int, int], pause: float = 0.0) -> None:
    client, k = Client(port, token), 0
    while not stop.is_set():
        status, ms = client.get(paths(k))
        out.append(ms)
        statuses[status] = statuses.get(status, 0) + 1
        k += 1
        if pause:
            time.sleep(pause)


def _phase(port: int, token: str, seconds: float, clients: int, heavy: str | None
           ) -> dict[str, Any]:
    stop = threading.Event()
    reads: list[float] = []
    health: list[float] = []
    heavy_ms: list[float] = []
    statuses: dict[int, int] = {}
    threads = [threading.Thread(target=_loop, args=(
        port, token, stop, lambda k, c=c: (
            f"/v1/accounts/{ACCOUNTS[(c + k) % 3]}/"
            f"{'invoices' if (c + k) % 2 else 'instances'}"), reads, statuses))
        for c in range(clients)]
    threads.append(threading.Thread(target=_loop, args=(
        port, token, stop, lambda k: "/v1/health", health, statuses, 0.02)))
    if heavy:
        threads.append(threading.Thread(target=_loop, args=(
            port, token, stop, lambda k: heavy, heavy_ms, statuses)))
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(120)
    result = {"reads": _quantiles(reads), "health": _quantiles(health),
              "statuses": {str(k): v for k, v in sorted(statuses.items())}}
    if heavy:
        result["heavy"] = _quantiles(heavy_ms)
    return result


def bench_api(store: str | None = None, instances: int = 300, hours: float = 24.0,
              seconds: float = 10.0, clients: int = 50, seed: int = 7) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = store or f"sqlite:///{Path(tmp) / 'cis.db'}"
        fill_start = time.perf_counter()
        with connect(store) as engine:
            simulate(engine, instances, seed=seed, hours=hours)
            engine.update_projections()
            _, token = tokens.create(engine.view, None)
            at = queries.newest_event_time(engine)
            busiest = max(ACCOUNTS, key=lambda a: len(queries.instances(engine, a)))
            events = engine.app.recorder.max_notification_id() or 0
        fill_s = time.perf_counter() - fill_start
        assert at is not None
        as_of = (at + queries.QUERY_AS_OF_AHEAD - timedelta(seconds=1)).isoformat()
        heavy = f"/v1/accounts/{busiest}/invoices?as_of={as_of.replace('+00:00', 'Z')}"
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-c", "from adapters.cli import main; main()", "api", "--store",
             store, "--port", str(port), "--log-level", "warning"],  # as `cis api` runs
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if Client(port, token).get("/v1/health")[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("cis api did not start")
                time.sleep(0.1)
            phases = {
                "readers": _phase(port, token, seconds, clients, None),
                "readers_with_heavy": _phase(port, token, seconds, clients, heavy),
                "health_with_heavy": _phase(port, token, seconds, 0, heavy),
            }
        finally:
            server.terminate()
            server.wait(30)
    return {"bench": "api", "store": store.split(":", 1)[0], "instances": instances,
            "events": events, "fill_s": round(fill_s, 1), "clients": clients,
            "seconds_per_phase": seconds, "heavy_query": heavy.split("?")[0] + "?as_of=" +
            "projected+QUERY_AS_OF_AHEAD", "cores": os.cpu_count(),
            "at": datetime.now().astimezone().isoformat(timespec="seconds"), **phases}


def register_bench(group: Any) -> None:
    from adapters.cli_args import positive_float, positive_int

    api = group.add_parser("api", help="latency of `cis api`: 50 concurrent readers, with "
                           "and without one heavy query; /v1/health meanwhile",
                           description=__doc__)
    api.add_argument("--store", default=None,
                     help="store to fill (default: a temporary SQLite file); give an empty "
                     "PostgreSQL schema to measure PostgreSQL")
    api.add_argument("--instances", type=positive_int, default=300)
    api.add_argument("--hours", type=positive_float, default=24.0)
    api.add_argument("--seconds", type=positive_float, default=10.0, help="per phase")
    api.add_argument("--clients", type=positive_int, default=50)
    api.add_argument("--json", action="store_true", help="print one JSON line")
    api.set_defaults(func=lambda args: _emit(bench_api(
        args.store, args.instances, args.hours, args.seconds, args.clients), args.json))


def _emit(result: dict[str, Any], as_json: bool) -> int:
    print(json.dumps(result) if as_json else json.dumps(result, indent=2))
    return 0
