"""`cis bench history`: start-up, memory and rebuild of the writer after a long history.

A synthetic history of D days of L launches (simulations/history.py: the real engine's
events for two days, copied day by day) is written straight into an empty store; at its end
`--live` instances are running. Then, each in a fresh process so that its RSS is its own:

- read: every event of the log, decoded (`engine.app.read()`): the baseline;
- writer, twice: start-up (`connect` + loading every cell: `processor.warm()`), RSS after
  it, and the latency of the first decision after it (one CreateInstance); the first start
  reads the whole log (the history was written straight into the store), its clean shutdown
  snapshots the cells, and the second start reads that snapshot and the log after it. Each
  says where its start-up went (`startup_parts`: connect, snapshot read and unpickling, the
  tail's read and fold, chain heads, eviction) and what its state holds (`state_pickled_mb`
  per part of the cell state);
- rebuild: `engine.rebuild_projections()` from an empty read model: events/s and peak RSS.

The history is written with each event's hash-chain link (PostgreSQL: COPY of a day per
transaction into the events and chain tables, their indexes built once at the end), so the
writer chains on from it and `cis audit verify` finds it intact. `--recordings DIR` keeps
the two days the engine records (the slow part) for later runs of the same size and seed.

Figures are wall times on a shared machine: read them against the baseline of the same run,
and against the CPU seconds reported beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from eventsourcing.persistence import StoredEvent
from tqdm import tqdm

from adapters.bootstrap import Engine, connect, tune_gc
from adapters.chain_recorders import CHAIN_TABLE
from adapters.cli_args import positive_int
from adapters.stores import Store, parse_store
from engine import chain, processor
from simulations import history

MB = 1024 * 1024
CHUNK = 20_000  # events per insert (SQLite) or per COPY flush (PostgreSQL)
GOALS = {"startup_seconds_at_most": 3.0, "writer_rss_mb_at_most": 400,
         "rebuild_events_per_s_at_least": 50_000,
         "startup_at_30_days_over_1_day_at_most": 1.5}


# --- writing the history -------------------------------------------------------------------


def _pg_connect(store: Store, autocommit: bool) -> psycopg.Connection[Any]:
    env = store.env
    return psycopg.connect(dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"],
                           port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                           password=env["POSTGRES_PASSWORD"], autocommit=autocommit)


def _create_schema(store: Store) -> None:
    if store.kind == "postgres":
        with _pg_connect(store, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{store.env["POSTGRES_SCHEMA"]}"')


def write_history(url: str, template: history.Template, days: int,
                  progress: tqdm | None = None) -> int:
    """Write the history into an empty store, each event with its hash-chain link, as the
    engine stores them (so the writer chains on from it and `cis audit verify` passes);
    returns the number of events."""
    store = parse_store(url)
    if store.kind == "memory":
        raise history.HistoryError("the measurements run in fresh processes: give a store "
                                   "they can open (sqlite:///FILE or postgresql://…)")
    _create_schema(store)
    with connect(url) as engine:
        if engine.app.recorder.max_notification_id():
            raise history.HistoryError(f"{url}: the store already holds events; give a fresh "
                                       "one (a new file or ?schema=)")
        days_of_events = chained(history.history(template, days))
        if store.kind == "postgres":
            return _copy_into_postgres(store, engine, days_of_events, progress)
        written = 0
        for _, events, links in days_of_events:
            for i in range(0, len(events), CHUNK):
                engine.app.recorder.insert_events(
                    events[i:i + CHUNK], chain=[(history.CELL, link)
                                                for link in links[i:i + CHUNK]])
                if progress is not None:
                    progress.update(len(events[i:i + CHUNK]))
            written += len(events)
        return written


Day = tuple[str, list[StoredEvent], list[bytes]]  # name, events, their chain links


def chained(days: Iterable[tuple[str, list[StoredEvent]]]) -> Iterator[Day]:
    """Each day's events with their links: the history is one cell's, one chain."""
    heads: dict[str, bytes] = {}
    for name, events in days:
        links, heads = chain.extend(heads, [history.CELL] * len(events), events)
        yield name, events, links


def _copy_into_postgres(store: Store, engine: Engine, days: Iterable[Day],
                        progress: tqdm | None) -> int:
    """COPY each day into the events table and its links into the chain table, in one
    transaction, as the recorder does. The tables' indexes are dropped first and built again
    at the end (one sort each instead of millions of random inserts into a b-tree); the
    tables are fresh, so no reader sees them without."""
    recorder: Any = engine.app.recorder
    schema, table = recorder.datastore.schema, recorder.events_table_name
    events_table = f'"{schema}"."{table}"'
    chain_table = f'"{schema}"."{CHAIN_TABLE}"'
    written = 0
    with _pg_connect(store, autocommit=False) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '512MB'")
        rebuild = [*_drop_indexes(conn, schema, table), *_drop_indexes(conn, schema, CHAIN_TABLE)]
        conn.commit()
        copy_events = (f"COPY {events_table} (originator_id, originator_version, topic, state) "
                       "FROM STDIN (FORMAT BINARY)")
        copy_links = f"COPY {chain_table} (notification_id, cell, hash) FROM STDIN (FORMAT BINARY)"
        last_id = f"SELECT currval(pg_get_serial_sequence('{events_table}', 'notification_id'))"
        cell = history.CELL
        for _, events, links in days:
            with conn.cursor() as cursor:
                # As the recorder: the lock keeps the day's ids consecutive, so they are the
                # sequence's last len(events) values.
                cursor.execute(f"LOCK TABLE {events_table} IN EXCLUSIVE MODE")
                with cursor.copy(copy_events) as copy:
                    copy.set_types(["uuid", "int8", "text", "bytea"])
                    write = copy.write_row
                    for e in events:
                        write((e.originator_id, e.originator_version, e.topic, e.state))
                row = cursor.execute(last_id).fetchone()
                first = int(_values(row)[0]) - len(events) + 1
                with cursor.copy(copy_links) as copy:
                    copy.set_types(["int8", "text", "bytea"])
                    write = copy.write_row
                    for nid, link in enumerate(links, first):
                        write((nid, cell, link))
            conn.commit()
            written += len(events)
            if progress is not None:
                progress.update(len(events))
        if progress is not None:
            progress.set_description("indexing")
        for statement in rebuild:
            conn.execute(statement)
        conn.execute(f"ANALYZE {events_table}")
        conn.execute(f"ANALYZE {chain_table}")
        conn.commit()
    return written


def _drop_indexes(conn: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    """Drop a table's primary key, unique constraints and indexes; returns the statements
    that make them again."""
    qualified = f'"{schema}"."{table}"'
    constraints = [_values(r) for r in conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('p', 'u')", (qualified,)).fetchall()]
    indexes = [_values(r) for r in conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND "
        "tablename = %s", (schema, table)).fetchall()]
    owned = {name for name, _ in constraints}
    plain = [(name, definition) for name, definition in indexes if name not in owned]
    for name, _ in constraints:
        conn.execute(f'ALTER TABLE {qualified} DROP CONSTRAINT "{name}"')
    for name, _ in plain:
        conn.execute(f'DROP INDEX "{schema}"."{name}"')
    return [*(f'ALTER TABLE {qualified} ADD CONSTRAINT "{name}" {definition}'
              for name, definition in constraints),
            *(definition for _, definition in plain)]


def _values(row: Any) -> list[Any]:
    return list(row.values()) if isinstance(row, dict) else list(row)


# --- measurements, each in a fresh process ----------------------------------------------------


def _rss_mb() -> dict[str, float]:
    """Resident set size now and at its peak (Linux: /proc; elsewhere the peak only)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status)
        return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
                "peak_rss_mb": round(int(fields["VmHWM"].split()[0]) / 1024, 1)}
    except OSError:
        return {"rss_mb": round(peak, 1), "peak_rss_mb": round(peak, 1)}


def probe_read(url: str) -> dict[str, Any]:
    with connect(url) as engine:
        began = time.perf_counter()
        events = sum(1 for _ in engine.app.read())
        seconds = time.perf_counter() - began
    return {"events": events, "seconds": round(seconds, 3),
            "events_per_s": round(events / seconds), **_rss_mb()}


class StartupClock:
    """Where a writer's start-up goes: wraps the few calls that load a cell (the snapshot
    read, its unpickling, the log's tail read and decoded, the chain heads, the eviction) and
    times them; what is left of the load is the fold of the tail (`World.replay`). Coarse
    calls only, but one per event for the tail: a generator step costs well under 1 µs."""

    PARTS = ("snapshot_read", "snapshot_thaw", "tail_read", "chain_heads", "evict")

    def __init__(self, engine: Engine):
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        self.tail_events = 0
        proc: Any = engine.processor
        if getattr(proc, "snapshots", None) is not None:
            proc.snapshots.load = self._timed("snapshot_read", proc.snapshots.load)
        if hasattr(processor, "thaw"):
            self._thaw = processor.thaw
            processor.thaw = self._timed("snapshot_thaw", processor.thaw)  # type: ignore[attr-defined]
        engine.app.chain_heads = self._timed("chain_heads", engine.app.chain_heads)  # type: ignore[method-assign]
        world = getattr(proc, "loaded_world", None) or proc.world  # (loading nothing)
        world.evict = self._timed("evict", world.evict)
        read = engine.app.read

        def timed_read(*args: Any, **kwargs: Any) -> Iterator[tuple[int, Any]]:
            pages = read(*args, **kwargs)
            clock = time.perf_counter
            while True:
                began = clock()
                item = next(pages, None)
                self.seconds["tail_read"] += clock() - began
                if item is None:
                    return
                self.tail_events += 1
                yield item

        engine.app.read = timed_read  # type: ignore[method-assign]

    def _timed(self, part: str, call: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - began
        return timed

    def close(self) -> None:
        if hasattr(self, "_thaw"):
            processor.thaw = self._thaw  # type: ignore[attr-defined]

    def report(self, load_seconds: float) -> dict[str, Any]:
        parts = {k: round(v, 3) for k, v in self.seconds.items()}
        parts["tail_fold"] = round(load_seconds - sum(self.seconds.values()), 3)
        return {**parts, "tail_events": self.tail_events}


def state_sizes_mb(engine: Engine, largest: int = 10) -> dict[str, float]:
    """Each part of the loaded cells' state, pickled (MB): where the writer's memory goes.
    A proxy (pickles are smaller than live objects, and an object two parts share is
    counted in each), but it ranks the parts."""
    sizes: Counter[str] = Counter()
    for state in getattr(engine.processor.world, "parts", {}).values():
        for name, value in vars(state).items():
            try:
                sizes[name] += len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
            except (pickle.PicklingError, TypeError, AttributeError):
                continue  # (callbacks)
    return {name: round(size / MB, 1) for name, size in sizes.most_common(largest)}


def probe_writer(url: str, first: dict[str, Any]) -> dict[str, Any]:
    """Start-up (connect + every cell loaded), RSS after it, the first decision; then a
    clean shutdown, which snapshots the cells (timed apart: the next start reads it). Also
    where the start-up went (StartupClock) and what the state holds (state_sizes_mb)."""
    began, cpu = time.perf_counter(), time.process_time()
    engine = connect(url)
    clock = StartupClock(engine)
    try:
        connected, rss_connected = time.perf_counter(), _rss_mb()["rss_mb"]
        warm = getattr(engine.processor, "warm", None)
        if warm is not None:
            warm()
        else:  # before snapshots: the whole world, loaded on first touch
            _ = engine.processor.world
        started, cpu = time.perf_counter(), time.process_time() - cpu
        rss = _rss_mb()
        outcome = engine.apply([json.dumps(first)])[0]
        decided = time.perf_counter()
        sizes = state_sizes_mb(engine)
    finally:
        clock.close()
        closing = time.perf_counter()
        engine.close()
    return {"startup_seconds": round(started - began, 3), "startup_cpu_seconds": round(cpu, 3),
            **rss,
            "first_decision_ms": round((decided - started) * 1000, 1),
            "first_decision": outcome.status,
            "shutdown_seconds": round(time.perf_counter() - closing, 3),
            "startup_parts": {"connect": round(connected - began, 3),
                              **clock.report(started - connected)},
            "rss_after_connect_mb": rss_connected,
            "state_pickled_mb": sizes}


def probe_rebuild(url: str) -> dict[str, Any]:
    with connect(url) as engine:
        before = _rss_mb()["rss_mb"]
        events = engine.app.recorder.max_notification_id() or 0
        began, cpu = time.perf_counter(), time.process_time()
        engine.rebuild_projections()  # (returns events times the projections fed)
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
        # CPU seconds of this process too: on a shared machine, wall time is mostly waiting.
        return {"events": events, "seconds": round(seconds, 3),
                "events_per_s": round(events / seconds), "cpu_seconds": round(cpu, 3),
                "events_per_cpu_s": round(events / cpu), "rss_before_mb": before,
                **_rss_mb()}


PROBES = {"read": probe_read, "writer": probe_writer, "rebuild": probe_rebuild}


def run_probe(name: str, url: str, *args: Any, max_rss_mb: int, timeout_s: float
              ) -> dict[str, Any]:
    """Run one probe in a fresh interpreter; stop it if its RSS passes `max_rss_mb`."""
    command = [sys.executable, "-m", "simulations.bench_history", name, url,
               *[json.dumps(a) for a in args]]
    began = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    verdict = None
    while child.poll() is None:
        rss = _child_rss_mb(child.pid)
        if rss is not None and rss > max_rss_mb:
            verdict = f"stopped: RSS passed {max_rss_mb} MB after " \
                      f"{time.monotonic() - began:.0f} s"
        elif time.monotonic() - began > timeout_s:
            verdict = f"stopped: still running after {timeout_s:.0f} s"
        if verdict:
            child.kill()
            break
        time.sleep(0.1)
    out, err = child.communicate()
    if verdict:
        return {"error": verdict}
    if child.returncode != 0:
        return {"error": err.decode(errors="replace").strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(out)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]  # at its end (shared cores)
    return result


def _child_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# --- the bench ---------------------------------------------------------------------------


MEASURES = ("read", "writer", "rebuild")


def bench_history(url: str, days: int, launches_per_day: int, live: int, seed: int = 12,
                  max_rss_mb: int = 4000, timeout_s: float = 3600,
                  measure: Iterable[str] = MEASURES, recordings: str | None = None
                  ) -> dict[str, Any]:
    if parse_store(url).kind == "memory":
        raise history.HistoryError("give a store the measuring processes can open "
                                   "(sqlite:///FILE or postgresql://…)")
    if not 1 <= days <= history.MAX_DAYS:
        raise history.HistoryError(f"--days {days}: give 1 to {history.MAX_DAYS}")
    began = time.perf_counter()
    with tqdm(desc="recording a day (engine)", unit="h", total=24, disable=None,
              file=sys.stderr) as bar:
        template = history.make_template(launches_per_day, live, days, seed, bar.update,
                                         recordings)
    made = time.perf_counter()
    total = template.events_in(days)
    with tqdm(desc="writing", unit="event", total=total, disable=None, unit_scale=True,
              file=sys.stderr) as bar:
        events = write_history(url, template, days, bar)
    written = time.perf_counter()
    del template
    limits = {"max_rss_mb": max_rss_mb, "timeout_s": timeout_s}
    result: dict[str, Any] = {
        "store": parse_store(url).kind, "days": days, "launches_per_day": launches_per_day,
        "live": live, "events": events,
        "generation": {"template_seconds": round(made - began, 1),
                       "write_seconds": round(written - made, 1),
                       "events_per_s": round(events / (written - made))},
    }
    if "read" in measure:
        result["read"] = run_probe("read", url, **limits)
    if "writer" in measure:
        # The history was written straight into the store, so the first start finds no
        # snapshot; its clean shutdown leaves one, which the second start reads.
        for name, decision in (("writer_from_log", "bench-1"),
                               ("writer_from_snapshot", "bench-2")):
            result[name] = run_probe("writer", url, history.first_decision(days, decision),
                                     **limits)
    if "rebuild" in measure:
        result["rebuild"] = run_probe("rebuild", url, **limits)
    result["goals"] = GOALS
    read = result.get("read", {})
    for name in ("writer_from_log", "writer_from_snapshot"):
        writer = result.get(name, {})
        if "seconds" in read and "startup_seconds" in writer:
            writer["startup_over_read"] = round(writer["startup_seconds"] / read["seconds"], 3)
    rebuild = result.get("rebuild", {})
    if "events_per_s" in read and "events_per_s" in rebuild:
        rebuild["over_read_rate"] = round(rebuild["events_per_s"] / read["events_per_s"], 3)
    return result


def cmd_bench_history(args: argparse.Namespace) -> int:
    try:
        result = bench_history(args.store, args.days, args.launches_per_day, args.live,
                               seed=args.seed, max_rss_mb=args.max_rss_mb,
                               timeout_s=args.timeout, measure=args.measure,
                               recordings=args.recordings)
    except history.HistoryError as exc:
        raise SystemExit(f"cis bench history: {exc}") from None
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def register_bench(bench_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = bench_sub.add_parser(
        "history", help="writer start-up, RSS, first decision and rebuild after D days",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True,
                        help="an empty store: sqlite:///FILE or postgresql://…?schema=NEW")
    parser.add_argument("--days", type=positive_int, default=1,
                        help=f"days of history, 1 to {history.MAX_DAYS} (default 1)")
    parser.add_argument("--launches-per-day", type=positive_int, default=100_000)
    parser.add_argument("--live", type=int, default=20_000,
                        help="instances still running at the end (default 20000)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--max-rss-mb", type=positive_int, default=4000,
                        help="stop a measuring process whose RSS passes this (default 4000)")
    parser.add_argument("--timeout", type=positive_int, default=3600,
                        help="stop a measuring process after this many seconds")
    parser.add_argument("--measure", type=_measures, default=MEASURES, metavar="WHAT",
                        help="comma-separated, of read,writer,rebuild (default all)")
    parser.add_argument("--recordings", metavar="DIR", default=None,
                        help="keep the two days the engine records here and reuse them in "
                        "later runs of the same size and seed (recording 100,000 launches "
                        "takes about 7 minutes of CPU per day); empty it after changing the engine")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.set_defaults(func=cmd_bench_history)


def _measures(text: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    if not chosen or set(chosen) - set(MEASURES):
        raise argparse.ArgumentTypeError(f"give some of {','.join(MEASURES)}")
    return chosen


def _probe_main(argv: list[str]) -> None:
    name, url, *args = argv
    tune_gc()  # as the `cis` processes do
    print(json.dumps(PROBES[name](url, *[json.loads(a) for a in args])))


if __name__ == "__main__":
    _probe_main(sys.argv[1:])
