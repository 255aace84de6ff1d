"""The writer's in-memory state: per cell, the aggregates that are live and indexes derived
from events (docs/design.md §7).

One writer per cell means the writer may decide from memory. A cell's state is built from its
newest snapshot plus the tail of the log, or by replaying the log, and kept current by
observing each new event through the same `observe` path, so the indexes a decision reads are
exactly what the log implies. Each cell's state stands alone (`CellState`): a writer loads
only the cells it is asked about, snapshots and drops them one by one.

What no decision needs any more leaves memory (`CellState.evict`): deleted instances (the
meter keeps their usage packed until it is finalised), gone nodes, finalised invoices. Their
events stay in the log, and a lookup that misses in a cell that evicted reads the aggregate
back from the log (`World.fetch`) -- so eviction never changes a decision, only what memory
holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Container, Iterator, Mapping, MutableMapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from engine.billing import BillingMeter
from engine.domain.cell_log import CellLog
from engine.domain.instance import ON_NODE, Instance
from engine.domain.invoice import Invoice
from engine.domain.node import GONE, TAKES_WORK, Node
from engine.domain.pool import Pool
from engine.domain.price_book import PriceBook
from engine.id_memory import Commands, IdMemory, Outcomes
from engine.placement_state import PoolPlacement
from engine.policies.quotas import AccountUsage

Key = tuple[str, str]  # (cell, name)
# What a cell-log entry carries beside its outcome.
CELL_LOG_EXTRAS = frozenset({"principal", "command_type", "digest", "command"})
InstanceKey = tuple[str, str, str]  # (cell, account, instance_id): instance ids are per account
Ref = tuple[str, str]  # (account, instance_id): an instance within its cell
OutcomeKey = tuple[str, str]  # (principal, command_id): command ids are per principal


class CellState:
    """One cell's state: its aggregates and the indexes derived from its events."""

    def __init__(self, cell: str, keep_seconds: int) -> None:
        self.cell = cell
        self.keep_seconds = keep_seconds  # how long an outcome is remembered
        self.aggregates: dict[UUID, Aggregate] = {}
        self.instances: dict[InstanceKey, Instance] = {}
        self.nodes: dict[Key, Node] = {}
        self.pools: dict[Key, Pool] = {}
        self.price_books: dict[str, PriceBook] = {}
        self.cell_logs: dict[str, CellLog] = {}
        # The command ids decided within the retention window, as pointers into the cell
        # log (engine/id_memory.py); `outcomes` and `commands` read their entries back.
        self.ids = IdMemory()
        # Each cell's clock: the newest time of an accepted command in it.
        self.clocks: dict[str, datetime] = {}
        # The newest time an operator vouched for (an accepted Tick or operator command, in
        # UTC): agents' reports may run only a bounded skew past it (docs/design.md §2.9).
        self.vouched: dict[str, datetime] = {}
        self.node_instances: dict[Key, set[Ref]] = defaultdict(set)
        self.pool_nodes: dict[Key, dict[str, Node]] = defaultdict(dict)
        # Unschedulable instances per pool, oldest first (dicts keep insertion order).
        self.waiting: dict[Key, dict[Ref, Instance]] = defaultdict(dict)
        # Nodes asked for and not yet ready, per pool; each pool's placement arrays.
        self.coming: dict[Key, set[str]] = defaultdict(set)
        self.live: dict[Key, set[str]] = defaultdict(set)  # nodes not terminated or lost
        self.cordoned: dict[Key, set[str]] = defaultdict(set)
        self.placements: dict[Key, PoolPlacement] = {}
        # The ENI device index each instance on a node holds (recorded, or given on replay of
        # events from before ENIs were recorded).
        self.enis: dict[InstanceKey, int] = {}
        # Since when each node has been under its pool's scale-down threshold (event time).
        self.unneeded_since: dict[Key, datetime] = {}
        # Further derived state (the billing meter, placement arrays) observes every event.
        self.observers: list[Callable[[Any, Any], None]] = []
        self.billing = BillingMeter()  # billed intervals per instance, for finalisation
        self.observers.append(self.billing.observe)
        self.accounts = AccountUsage()  # per account: limits, live vCPU, launch bucket
        self.observers.append(self.accounts.observe)
        self.evicted = False  # once true, a lookup that misses may find its aggregate in the log
        # The link of the cell's newest stored event in its hash chain (None: no event yet).
        self.chain_head: bytes | None = None

    # --- lookups ---------------------------------------------------------------------

    def instance(self, cell: str, account: str, name: str) -> Instance | None:
        return self.instances.get((cell, account, name))

    def node(self, cell: str, node_id: str) -> Node | None:
        return self.nodes.get((cell, node_id))

    def pool(self, cell: str, name: str) -> Pool | None:
        return self.pools.get((cell, name))

    def price_book(self, cell: str) -> PriceBook | None:
        return self.price_books.get(cell)

    def cell_log(self, cell: str) -> CellLog | None:
        return self.cell_logs.get(cell)

    def instances_on(self, cell: str, node_id: str) -> list[Instance]:
        return [self.instances[(cell, *ref)]
                for ref in sorted(self.node_instances[(cell, node_id)])]

    def waiting_in(self, cell: str, pool: str) -> list[Instance]:
        return list(self.waiting[(cell, pool)].values())

    # --- keeping it current ----------------------------------------------------------

    def add(self, aggregate: Aggregate) -> None:
        if aggregate.id in self.aggregates:
            return
        self.aggregates[aggregate.id] = aggregate
        if isinstance(aggregate, Instance):
            self.instances[(aggregate.cell, aggregate.account, aggregate.name)] = aggregate
        elif isinstance(aggregate, Node):
            self.nodes[(aggregate.cell, aggregate.node_id)] = aggregate
        elif isinstance(aggregate, Pool):
            self.pools[(aggregate.cell, aggregate.pool)] = aggregate
        elif isinstance(aggregate, PriceBook):
            self.price_books[aggregate.cell] = aggregate
        elif isinstance(aggregate, CellLog):
            self.cell_logs[aggregate.cell] = aggregate

    def observe(self, event: Any, aggregate: Any) -> None:
        """Update the derived indexes after `event` has been applied to `aggregate`."""
        for observer in self.observers:
            observer(event, aggregate)
        if isinstance(aggregate, Instance):
            self._observe_instance(aggregate)
        elif isinstance(aggregate, Node):
            pool_key = (aggregate.cell, aggregate.pool)
            placement = self.placements[pool_key]
            if isinstance(event, Node.Requested):
                self.pool_nodes[pool_key][aggregate.node_id] = aggregate
                self.coming[pool_key].add(aggregate.node_id)
                self.live[pool_key].add(aggregate.node_id)
                placement.add_node(aggregate.node_id, aggregate.model, aggregate.capacity,
                                   aggregate.labels)
            else:
                self.coming[pool_key].discard(aggregate.node_id)
                if aggregate.state in GONE:
                    self.live[pool_key].discard(aggregate.node_id)
                if aggregate.state == "cordoned":
                    self.cordoned[pool_key].add(aggregate.node_id)
                else:
                    self.cordoned[pool_key].discard(aggregate.node_id)
                placement.set_takes_work(aggregate.node_id, aggregate.state in TAKES_WORK)
                if isinstance(event, Node.Uncordoned):  # taking work again: a fresh idle clock
                    self.unneeded_since.pop((aggregate.cell, aggregate.node_id), None)
                self._track_need(aggregate.cell, aggregate.pool, aggregate.node_id,
                                 event.timestamp)
        elif isinstance(aggregate, Pool):
            config = aggregate.config
            placement = self.placements.setdefault(
                (aggregate.cell, aggregate.pool),
                PoolPlacement(config.kind, config.placement_policy))
            placement.policy = config.placement_policy
        elif isinstance(event, CellLog.CommandsHandled):
            if any(entry["status"] == "accepted" for entry in event.outcomes):
                # Only accepted commands move a clock (a batch of rejections carries it over).
                clock = self.clocks.get(aggregate.cell)
                self.clocks[aggregate.cell] = max(clock or event.timestamp, event.timestamp)
            vouched = vouched_time(event.outcomes, event.timestamp)
            if vouched is not None:
                held = self.vouched.get(aggregate.cell)
                self.vouched[aggregate.cell] = vouched if held is None else max(held, vouched)
            clock = self.clocks.get(aggregate.cell)
            # (Ids decided before the cell had a clock count from its first.)
            self.ids.remember(event.outcomes, event.originator_version, clock)
            if clock is not None:
                # Command ids are remembered for a window (docs/design.md §7.4), kept longer by
                # the skew: an outcome may be recorded before the time its command claims.
                self.forget_before(clock - timedelta(seconds=self.keep_seconds))

    def remember(self, entry: dict[str, Any]) -> OutcomeKey:
        """Index one cell-log entry of the batch being decided (until its event is stored):
        an outcome, plus (since command ids are per principal) its command's principal, type
        and digest. Older entries have none: principal ""."""
        key = (entry.get("principal", ""), entry["command_id"])
        self.ids.remember_pending(key, entry)
        return key

    def forget_before(self, horizon: datetime) -> None:
        """Forget the outcomes recorded before `horizon` (a cell's batches are stamped with
        its clock, which never goes back, so they are in time order)."""
        self.ids.forget_before(horizon)

    @property
    def outcomes(self) -> Outcomes:
        return Outcomes(self.ids, CELL_LOG_EXTRAS)

    @property
    def commands(self) -> Commands:
        return Commands(self.ids)

    def recorded(self, principal: str, command_id: str) -> OutcomeKey | None:
        """The key of the outcome recorded for this principal's command id, if any (an entry
        from before ids were per principal counts for every principal)."""
        for key in ((principal, command_id), ("", command_id)):
            if self.ids.entry(key) is not None:
                return key
        return None

    def _observe_instance(self, instance: Instance) -> None:
        key = (instance.cell, instance.pool)
        ref = (instance.account, instance.name)
        if instance.state == "unschedulable":
            self.waiting[key][ref] = instance
        else:
            self.waiting[key].pop(ref, None)
        if instance.node_id is not None:
            node_key = (instance.cell, instance.node_id)
            on_node = self.node_instances[node_key]
            was_on = ref in on_node
            placement = self.placements[(instance.cell, instance.pool)]
            eni = (instance.attachment or {}).get("eni_index")
            if instance.state in ON_NODE and not was_on:
                on_node.add(ref)
                self.enis[(instance.cell, *ref)] = placement.allocate(
                    instance.node_id, instance.demand, eni)
            elif instance.state not in ON_NODE and was_on:
                on_node.discard(ref)
                placement.release(instance.node_id, instance.demand,
                                  self.enis.pop((instance.cell, *ref), eni))
            else:
                return
            self._track_need(instance.cell, instance.pool, instance.node_id,
                             instance.modified_on)

    def _track_need(self, cell: str, pool: str, node_id: str, at: datetime) -> None:
        node_key = (cell, node_id)
        node = self.pool_nodes[(cell, pool)][node_id]
        if node.state not in ("ready", "cordoned"):
            self.unneeded_since.pop(node_key, None)
            return
        config = self.pools[(cell, pool)].config
        placement = self.placements[(cell, pool)]
        if config.kind == "dedicated":  # a dedicated node is needed while it hosts one
            used = 1.0 if self.node_instances[node_key] else 0.0
        else:
            used = placement.utilisation(node_id)
        if used < config.scale_down_utilisation_threshold:
            self.unneeded_since.setdefault(node_key, at)
        else:
            self.unneeded_since.pop(node_key, None)

    # --- snapshots --------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Observers are bound methods of parts kept here; they are wired again on load.
        return {k: v for k, v in vars(self).items() if k != "observers"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self.observers = [self.billing.observe, self.accounts.observe]

    # --- leaving memory ----------------------------------------------------------------

    def evict(self) -> int:
        """Drop the aggregates no decision needs: deleted instances, gone nodes with nothing
        on them, finalised invoices. Answers how many left. (Deleted instances and gone nodes
        are terminal: no event ever follows, so a replay of the tail never needs one back.
        The meter packs a deleted instance's usage itself, until its periods are finalised:
        engine/billing/settled.py.)"""
        gone = [instance.id for instance in self.instances.values()
                if instance.state == "deleted"]
        for (_, node_id), node in self.nodes.items():
            if node.state in GONE and not self.node_instances.get((self.cell, node_id)):
                gone.append(node.id)
        gone += [a.id for a in self.aggregates.values() if isinstance(a, Invoice)]
        for aggregate_id in gone:
            self._drop(self.aggregates.pop(aggregate_id))
        self.evicted = self.evicted or bool(gone)
        return len(gone)

    def _drop(self, aggregate: Aggregate) -> None:
        if isinstance(aggregate, Instance):
            key = (aggregate.cell, aggregate.account, aggregate.name)
            del self.instances[key]
            self.accounts.live.pop(key, None)
        elif isinstance(aggregate, Node):
            key = (aggregate.cell, aggregate.node_id)
            del self.nodes[key]
            self.pool_nodes[(aggregate.cell, aggregate.pool)].pop(aggregate.node_id, None)
            self.node_instances.pop(key, None)
            self.unneeded_since.pop(key, None)

    def adopt(self, aggregate: Aggregate) -> None:
        """Take back an evicted (terminal) aggregate read from the log, for lookups only: it
        joins no index, since nothing terminal is placed, waited for or billed."""
        self.aggregates[aggregate.id] = aggregate
        if isinstance(aggregate, Instance):
            self.instances[(aggregate.cell, aggregate.account, aggregate.name)] = aggregate
        elif isinstance(aggregate, Node):
            self.nodes[(aggregate.cell, aggregate.node_id)] = aggregate


def vouched_time(entries: list[dict[str, Any]], stamp: datetime) -> datetime | None:
    """The newest time an operator vouched for in one batch's entries: an accepted operator
    command's own time (what the processor used deciding it), in UTC. An entry from before
    principals or commands were kept counts at its batch's stamp (old history is trusted)."""
    newest: datetime | None = None
    for entry in entries:
        principal = entry.get("principal")  # (first: most entries are not an operator's)
        if (principal is not None and principal != "operator") or entry["status"] != "accepted":
            continue
        command = entry.get("command")
        if principal is None or command is None:
            at = stamp
        else:
            at = datetime.fromisoformat(command["now" if command["type"] == "Tick"
                                                else "issued_at"])
        at = at.astimezone(UTC)
        newest = at if newest is None else max(newest, at)
    return newest


Fetch = Callable[[UUID], Aggregate | None]
ReadEvent = Callable[[UUID, int], Any]


class World:
    """Every loaded cell's state, behind one face: the lookups and indexes handlers read are
    routed by the cell in their key. Cells are loaded (and dropped) by the processor."""

    def __init__(self, keep_seconds: int) -> None:
        self.keep_seconds = keep_seconds
        self.parts: dict[str, CellState] = {}
        self.cell_of: dict[UUID, str] = {}  # the cell of each aggregate in memory
        # Reads an aggregate back from the log (set by the processor; None: nothing to read).
        self.fetch: Fetch | None = None
        # Reads one stored event back by aggregate and version (set by the processor): the
        # cell logs' entries, for the id memory's repeats.
        self.read_event: ReadEvent | None = None
        self.absent: set[UUID] = set()  # ids known to have no events (this batch's look-up)
        self.aggregates = _Aggregates(self)
        for name in ("instances", "nodes", "pools", "node_instances", "pool_nodes", "waiting",
                     "coming", "live", "cordoned", "placements", "enis", "unneeded_since"):
            setattr(self, name, _ByCell(self, name))
        self.billing = _Meters(self)
        self.accounts = _Accounts(self)

    def part(self, cell: str) -> CellState:
        state = self.parts.get(cell)
        if state is None:
            state = self.parts[cell] = CellState(cell, self.keep_seconds)
            state.ids.reader = partial(self._log_entries, cell)
        return state

    def attach(self, state: CellState) -> None:
        """Take a cell's state (from a snapshot or a replay) as this world's."""
        self.detach(state.cell)
        self.parts[state.cell] = state
        state.ids.reader = partial(self._log_entries, state.cell)
        for aggregate_id in state.aggregates:
            self.cell_of[aggregate_id] = state.cell

    def _log_entries(self, cell: str, version: int) -> list[dict[str, Any]] | None:
        """The entries of the cell log's event at `version` (None: no such event)."""
        if self.read_event is None:
            return None
        event = self.read_event(CellLog.create_id(cell), version)
        return None if event is None else event.outcomes

    def detach(self, cell: str) -> CellState | None:
        state = self.parts.pop(cell, None)
        if state is not None:
            for aggregate_id in state.aggregates:
                self.cell_of.pop(aggregate_id, None)
        return state

    def evict(self, cell: str) -> int:
        state = self.parts.get(cell)
        if state is None:
            return 0
        before = set(state.aggregates)
        count = state.evict()
        for aggregate_id in before - state.aggregates.keys():
            self.cell_of.pop(aggregate_id, None)
        return count

    @property
    def clocks(self) -> dict[str, datetime]:
        return {cell: state.clocks[cell] for cell, state in self.parts.items()
                if cell in state.clocks}

    @property
    def vouched(self) -> dict[str, datetime]:
        return {cell: state.vouched[cell] for cell, state in self.parts.items()
                if cell in state.vouched}

    # --- lookups ---------------------------------------------------------------------

    def instance(self, cell: str, account: str, name: str) -> Instance | None:
        state = self.parts.get(cell)
        if state is None:
            return None
        found = state.instances.get((cell, account, name))
        if found is None and state.evicted:
            found = self._read_back(state, Instance.create_id(cell, account, name), Instance)
        return found

    def node(self, cell: str, node_id: str) -> Node | None:
        state = self.parts.get(cell)
        if state is None:
            return None
        found = state.nodes.get((cell, node_id))
        if found is None and state.evicted:
            found = self._read_back(state, Node.create_id(cell, node_id), Node)
        return found

    def _read_back(self, state: CellState, aggregate_id: UUID, kind: type[Any]) -> Any:
        if aggregate_id in self.absent or self.fetch is None:
            return None
        aggregate = self.fetch(aggregate_id)
        if not isinstance(aggregate, kind):
            return None
        state.adopt(aggregate)
        self.cell_of[aggregate_id] = state.cell
        return aggregate

    def pool(self, cell: str, name: str) -> Pool | None:
        state = self.parts.get(cell)
        return None if state is None else state.pool(cell, name)

    def price_book(self, cell: str) -> PriceBook | None:
        state = self.parts.get(cell)
        return None if state is None else state.price_book(cell)

    def cell_log(self, cell: str) -> CellLog | None:
        state = self.parts.get(cell)
        return None if state is None else state.cell_log(cell)

    def instances_on(self, cell: str, node_id: str) -> list[Instance]:
        return self.part(cell).instances_on(cell, node_id)

    def waiting_in(self, cell: str, pool: str) -> list[Instance]:
        return self.part(cell).waiting_in(cell, pool)

    def recorded(self, cell: str, principal: str, command_id: str) -> OutcomeKey | None:
        state = self.parts.get(cell)
        return None if state is None else state.recorded(principal, command_id)

    def remember(self, cell: str, entry: dict[str, Any]) -> None:
        self.part(cell).remember(entry)

    # --- keeping it current ----------------------------------------------------------

    def add(self, aggregate: Aggregate) -> None:
        cell = aggregate.cell  # type: ignore[attr-defined]
        self.part(cell).add(aggregate)
        self.cell_of[aggregate.id] = cell

    def observe(self, event: Any, aggregate: Any) -> None:
        self.part(aggregate.cell).observe(event, aggregate)

    def replay(self, event: Any, cells: Container[str] | None = None) -> bool:
        """Apply one stored event (start-up), if it belongs to one of `cells` (None: any).
        An event is known by its aggregate's cell; a creation names its cell. Answers
        whether it was applied."""
        cell = self.cell_of.get(event.originator_id)
        if cell is None:
            cell = getattr(event, "cell", None) if event.originator_version == 1 else None
            if cell is None or (cells is not None and cell not in cells):
                return False  # another cell's, or an evicted aggregate's (terminal: no more)
        elif cells is not None and cell not in cells:
            return False
        state = self.part(cell)
        aggregate = event.mutate(state.aggregates.get(event.originator_id))
        self.add(aggregate)
        state.observe(event, aggregate)
        return True


class _ByCell(MutableMapping[Any, Any]):
    """One of the cells' indexes (keyed by (cell, ...)) seen as one mapping."""

    def __init__(self, world: World, name: str) -> None:
        self.world, self.name = world, name

    def _of(self, key: Any) -> dict[Any, Any]:
        return getattr(self.world.part(key[0]), self.name)

    def __getitem__(self, key: Any) -> Any:
        return self._of(key)[key]

    def get(self, key: Any, default: Any = None) -> Any:
        state = self.world.parts.get(key[0])
        return default if state is None else getattr(state, self.name).get(key, default)

    def __contains__(self, key: object) -> bool:
        state = self.world.parts.get(key[0])  # type: ignore[index]
        return state is not None and key in getattr(state, self.name)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._of(key)[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._of(key)[key]

    def __iter__(self) -> Iterator[Any]:
        for state in list(self.world.parts.values()):
            yield from getattr(state, self.name)

    def __len__(self) -> int:
        return sum(len(getattr(s, self.name)) for s in self.world.parts.values())


class _Aggregates(Mapping[UUID, Aggregate]):
    def __init__(self, world: World) -> None:
        self.world = world

    def __getitem__(self, aggregate_id: UUID) -> Aggregate:
        cell = self.world.cell_of.get(aggregate_id)
        if cell is not None:
            return self.world.parts[cell].aggregates[aggregate_id]
        # Perhaps evicted: read it back (into its cell, if that cell is loaded).
        fetch = self.world.fetch
        found = fetch(aggregate_id) if fetch is not None else None
        state = self.world.parts.get(getattr(found, "cell", None))  # type: ignore[arg-type]
        if found is None or state is None or not state.evicted:
            raise KeyError(aggregate_id)
        state.adopt(found)
        self.world.cell_of[aggregate_id] = state.cell
        return found

    def get(self, aggregate_id: UUID, default: Any = None) -> Any:  # type: ignore[override]
        cell = self.world.cell_of.get(aggregate_id)
        if cell is None:  # only a lookup by name reads an evicted aggregate back
            return default
        return self.world.parts[cell].aggregates.get(aggregate_id, default)

    def __contains__(self, aggregate_id: object) -> bool:
        return aggregate_id in self.world.cell_of

    def __iter__(self) -> Iterator[UUID]:
        for state in list(self.world.parts.values()):
            yield from state.aggregates

    def __len__(self) -> int:
        return sum(len(s.aggregates) for s in self.world.parts.values())


class _Meters:
    """`world.billing.cells`: each loaded cell's meter."""

    def __init__(self, world: World) -> None:
        self.world = world

    @property
    def cells(self) -> dict[str, Any]:
        return {cell: state.billing.cells[cell] for cell, state in self.world.parts.items()
                if cell in state.billing.cells}


class _Accounts:
    """`world.accounts`: each loaded cell's account usage, read by (cell, account)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.vcpu = _ByCellOf(world, "vcpu")

    def account(self, cell: str, account: str) -> Any:
        return self.world.part(cell).accounts.account(cell, account)

    def bucket(self, cell: str, account: str) -> Any:
        return self.world.part(cell).accounts.bucket(cell, account)


class _ByCellOf(_ByCell):
    """An index of a cell's account usage, seen as one mapping."""

    def _of(self, key: Any) -> dict[Any, Any]:
        return getattr(self.world.part(key[0]).accounts, self.name)

    def get(self, key: Any, default: Any = None) -> Any:
        state = self.world.parts.get(key[0])
        return default if state is None else getattr(state.accounts, self.name).get(key, default)

    def __contains__(self, key: object) -> bool:
        state = self.world.parts.get(key[0])  # type: ignore[index]
        return state is not None and key in getattr(state.accounts, self.name)

    def __iter__(self) -> Iterator[Any]:
        for state in list(self.world.parts.values()):
            yield from getattr(state.accounts, self.name)

    def __len__(self) -> int:
        return sum(len(getattr(s.accounts, self.name)) for s in self.world.parts.values())
