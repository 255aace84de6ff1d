"""The hash chain over the log: one chain per cell (docs/design.md §2.11).

Each stored event's link is `SHA-256(previous link of its cell ‖ canonical bytes of the
event)`; a cell's chain starts from a genesis value derived from its name, and its head is
the newest link. The canonical bytes are the stored event exactly as the store keeps it
(originator id, version, topic and the encoded state), never its place in the log: so the
same commands give the same chain on every store and whichever writer wrote them, and an
event's link is known before the store numbers it.

`verify` is the audit's fold: it recomputes every link from the stored events in log order
and names each event that does not chain.
"""

from __future__ import annotations

import hashlib
import struct
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol
from uuid import UUID

_FIXED = struct.Struct(">16sqI")  # originator id, version, length of the topic
_LENGTH = struct.Struct(">I")


class Stored(Protocol):
    """A stored event as the store keeps it (eventsourcing's StoredEvent, a Notification)."""

    @property
    def originator_id(self) -> UUID | str: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def state(self) -> bytes: ...


def genesis(cell: str) -> bytes:
    """Where a cell's chain starts: bound to the cell, so a chain cannot pass as another's."""
    return hashlib.sha256(b"cis-chain-v1\x00" + cell.encode("utf-8")).digest()


def canonical(stored: Stored) -> bytes:
    """The event's bytes, length-prefixed where lengths vary: no two events share them."""
    return _canonical(stored.originator_id, stored.originator_version, stored.topic,
                      stored.state)


def _canonical(oid: UUID | str, version: int, topic: str, state: bytes) -> bytes:
    raw = oid.bytes if isinstance(oid, UUID) else UUID(str(oid)).bytes
    encoded = topic.encode("utf-8")
    return b"".join((_FIXED.pack(raw, version, len(encoded)), encoded,
                     _LENGTH.pack(len(state)), state))


def link(prev: bytes, stored: Stored) -> bytes:
    """The link of `stored` after the link `prev` of its cell."""
    return hashlib.sha256(prev + canonical(stored)).digest()


def extend(heads: Mapping[str, bytes], cells: Sequence[str], stored: Sequence[Stored]
           ) -> tuple[list[bytes], dict[str, bytes]]:
    """The links of a batch of events (the cell of each in `cells`), in order, after the
    cells' `heads` (a cell not in them starts at its genesis); and the cells' new heads."""
    new = dict(heads)
    links = []
    for cell, event in zip(cells, stored, strict=True):
        prev = new.get(cell)
        new[cell] = hashed = link(genesis(cell) if prev is None else prev, event)
        links.append(hashed)
    return links, new


# --- verifying ---------------------------------------------------------------------------

class Row(NamedTuple):
    """One place in the log: the event stored there and the link stored for it. Either may
    be missing (that is what verify looks for): no event, `originator_id` is None; no link,
    `cell` and `hash` are. Stores may give plain tuples in this order."""

    notification_id: int
    originator_id: UUID | str | None
    originator_version: int | None
    topic: str | None
    state: bytes | None
    cell: str | None
    hash: bytes | None


@dataclass(frozen=True)
class Finding:
    notification_id: int
    cell: str
    problem: str
    originator_id: str = ""
    originator_version: int | None = None


@dataclass
class Verified:
    """What verify found: every broken place, and each cell's recomputed head."""

    events: int = 0
    findings: list[Finding] = field(default_factory=list)
    heads: dict[str, tuple[int, bytes, int]] = field(default_factory=dict)  # id, hash, count

    @property
    def intact(self) -> bool:
        return not self.findings


CHANGED = ("does not chain: this event was changed, or the event before it in its cell was "
           "deleted, inserted or moved")
UNCHAINED = ("has no chain link: written outside the engine (inserted), or before the chain "
             "existed")
DELETED = "is missing: its chain link is stored, the event is not (deleted)"
WRONG_CELL = "is chained in cell {linked!r}, but its aggregate belongs to cell {cell!r}"


CLAIM = ("records its cell's chain head as {claimed}…, but the chain stood at {stood}… "
         "before its batch")
REWRITTEN = ("is not the head published for cell {cell!r} at this place "
             "({pinned}…): the chain was rewritten up to here")
PIN_GONE = "held the head published for cell {cell!r}, and is gone"
NO_CELL = "was asked for, but the log has no event of cell {cell!r}"


@dataclass(frozen=True)
class Claims:
    """Events that record their cell's head as it stood before their batch (a finalised
    invoice: `topics`, the head read by `claimed`), and the events that end a cell's part of
    a batch (its command log's: `batch_ends`)."""

    topics: frozenset[str]
    claimed: Callable[[Stored], str | None]
    batch_ends: frozenset[str]


def verify(rows: Iterable[Row | tuple[Any, ...]], cells: Collection[str] | None = None,
           pins: Mapping[int, tuple[str, bytes]] | None = None,
           claims: Claims | None = None) -> Verified:
    """Recompute each cell's chain over `rows` in log order. Every link is checked against
    the stored link before it in its cell, so each tampered place is named on its own (an
    edit does not make every later event look broken). `cells`: check only these. `pins`:
    heads published earlier (notification id -> cell, link); a chain rewritten whole still
    chains, but no longer passes through them. `claims`: check the heads events record
    (a finalised invoice's) against the recomputed chain."""
    result = Verified()
    findings = result.findings
    unseen = dict(pins or {})
    heads: dict[str, bytes] = {}  # per cell: the stored link of its latest event
    newest: dict[str, int] = {}
    counts: dict[str, int] = defaultdict(int)
    batch_heads: dict[str, bytes] = {}  # per cell: the link that ended its latest batch
    cell_of: dict[Any, str] = {}  # originator id -> cell, as its links say
    claimed_topics = claims.topics | claims.batch_ends if claims else frozenset()
    sha256 = hashlib.sha256
    for nid, oid, version, topic, state, linked, hashed in rows:
        cell = linked if linked is not None else cell_of.get(oid, "?")
        if cells is not None and cell not in cells:
            continue
        problem = None
        if oid is not None:
            result.events += 1
        if hashed is None:
            problem = UNCHAINED
        elif oid is None:
            problem = DELETED
        else:
            prev = heads.get(cell) or genesis(cell)
            if sha256(prev + _canonical(oid, version, topic, state)).digest() != hashed:
                problem = CHANGED
            elif cell_of.setdefault(oid, cell) != cell:
                problem = WRONG_CELL.format(linked=cell, cell=cell_of[oid])
            if claims is not None and topic in claimed_topics:
                if problem is None and topic in claims.topics:
                    claimed = claims.claimed(_Stored(oid, version, topic, state))
                    stood = (batch_heads.get(cell) or genesis(cell)).hex()
                    if claimed is not None and claimed != stood:
                        problem = CLAIM.format(claimed=claimed[:16], stood=stood[:16])
                if topic in claims.batch_ends:
                    batch_heads[cell] = hashed
        if unseen:
            pinned = unseen.pop(nid, None)
            if problem is None and pinned is not None and pinned != (cell, hashed):
                problem = REWRITTEN.format(cell=pinned[0], pinned=pinned[1].hex()[:16])
        if problem is not None:
            findings.append(Finding(nid, cell, problem, _text(oid), version))
        if hashed is not None and linked is not None:
            heads[cell] = hashed  # go on from the stored link: the next event stands alone
            newest[cell] = nid
            counts[cell] += 1
    result.heads = {cell: (newest[cell], heads[cell], counts[cell]) for cell in heads}
    for nid, (cell, _) in sorted(unseen.items()):
        if cells is None or cell in cells:
            findings.append(Finding(nid, cell, PIN_GONE.format(cell=cell)))
    # A cell asked for by name that the log never mentions (a typo) is not "intact".
    findings += [Finding(0, cell, NO_CELL.format(cell=cell))
                 for cell in sorted(set(cells or ()) - set(counts) - {f.cell for f in findings})]
    findings.sort(key=lambda f: f.notification_id)
    return result


def _text(oid: UUID | str | None) -> str:
    if oid is None:
        return ""
    try:
        return str(oid if isinstance(oid, UUID) else UUID(str(oid)))
    except ValueError:
        return str(oid)


@dataclass(frozen=True)
class _Stored:
    originator_id: UUID | str
    originator_version: int
    topic: str
    state: bytes


def merge(events: Iterable[Stored], links: Iterable[tuple[int, str, bytes]]
          ) -> Iterator[Row]:
    """Events (with their notification `id`) and links, each in notification order, as rows
    in notification order."""
    links_iter = iter(links)
    pending = next(links_iter, None)
    for event in events:
        nid = event.id  # type: ignore[attr-defined]
        while pending is not None and pending[0] < nid:
            yield Row(pending[0], None, None, None, None, pending[1], pending[2])
            pending = next(links_iter, None)
        cell, hashed = (pending[1], pending[2]) if pending is not None and pending[0] == nid \
            else (None, None)
        if cell is not None:
            pending = next(links_iter, None)
        yield Row(nid, event.originator_id, event.originator_version, event.topic,
                  event.state, cell, hashed)
    while pending is not None:
        yield Row(pending[0], None, None, None, None, pending[1], pending[2])
        pending = next(links_iter, None)
