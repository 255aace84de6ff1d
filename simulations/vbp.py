"""Readers for VPSolver `.vbp` vector-packing instances and the `*_summary_known.csv` optima."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

# Items an instance may expand to (a demand is a count: 30 bytes could ask for 10**23).
MAX_PACK_ITEMS = 1_000_000


@dataclass(frozen=True)
class VbpInstance:
    """One vector bin-packing instance: item vectors (demand expanded) and the bin capacity."""

    name: str
    capacity: tuple[int, ...]
    items: tuple[tuple[int, ...], ...]

    @property
    def dims(self) -> int:
        return len(self.capacity)


@dataclass(frozen=True)
class KnownOptimum:
    """One row of a summary CSV; `opt` is None when the optimum is unknown (-1 in the file)."""

    name: str
    lb: int
    opt: int | None
    best_overall: int | None


def _ints(line: str, lineno: int, path: str) -> list[int]:
    try:
        return [int(tok) for tok in line.split()]
    except ValueError:
        raise ValueError(f"{path}:{lineno}: expected integers, got {line.strip()!r}") from None


def parse_vbp(text: str, name: str = "<string>", clamp_negative: bool = False) -> VbpInstance:
    """Parse `.vbp` text; raise ValueError naming the offending line on any malformation.

    77 Triplet/Caprara files contain sizes of -1/-2 (a generator artifact); with
    `clamp_negative` those read as 0 instead of being rejected.
    """
    # Keep real line numbers while skipping blank lines, so errors point at the file.
    lines = [(no, ln) for no, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    pos = 0

    def take(what: str) -> tuple[int, list[int]]:
        nonlocal pos
        if pos >= len(lines):
            last = lines[-1][0] if lines else 0
            raise ValueError(f"{name}:{last + 1}: unexpected end of file, expected {what}")
        no, ln = lines[pos]
        pos += 1
        return no, _ints(ln, no, name)

    no, vals = take("number of dimensions")
    if len(vals) != 1 or vals[0] < 1:
        raise ValueError(f"{name}:{no}: expected one positive dimension count, got {vals}")
    d = vals[0]
    no, cap = take("bin capacities")
    if len(cap) != d:
        raise ValueError(f"{name}:{no}: expected {d} capacities, got {len(cap)}")
    if any(c <= 0 for c in cap):
        raise ValueError(f"{name}:{no}: capacities must be positive, got {cap}")
    no, vals = take("number of item types")
    if len(vals) != 1 or vals[0] < 0:
        raise ValueError(f"{name}:{no}: expected one non-negative item-type count, got {vals}")
    m = vals[0]
    items: list[tuple[int, ...]] = []
    for _ in range(m):
        no, row = take("an item line")
        if len(row) != d + 1:
            raise ValueError(f"{name}:{no}: expected {d} sizes and a demand, got {len(row)} values")
        sizes, q = row[:d], row[d]
        if q < 0:
            raise ValueError(f"{name}:{no}: negative demand {q}")
        if clamp_negative:
            sizes = [max(0, s) for s in sizes]
        if any(s < 0 for s in sizes):
            raise ValueError(f"{name}:{no}: negative item size in {sizes}")
        if any(s > c for s, c in zip(sizes, cap, strict=True)):
            raise ValueError(f"{name}:{no}: item {sizes} exceeds bin capacity {cap}")
        if q > MAX_PACK_ITEMS - len(items):
            raise ValueError(f"{name}:{no}: more than {MAX_PACK_ITEMS:,} items in all "
                             "(MAX_PACK_ITEMS): too many to pack here")
        items.extend([tuple(sizes)] * q)
    if pos != len(lines):
        no = lines[pos][0]
        raise ValueError(f"{name}:{no}: trailing data after {m} item types")
    return VbpInstance(name=name, capacity=tuple(cap), items=tuple(items))


def read_vbp(path: str | Path, clamp_negative: bool = False) -> VbpInstance:
    """Read a `.vbp` file; the instance name is the file stem."""
    p = Path(path)
    inst = parse_vbp(p.read_text(), name=str(p), clamp_negative=clamp_negative)
    return VbpInstance(name=p.stem, capacity=inst.capacity, items=inst.items)


def read_summary(path: str | Path) -> dict[str, KnownOptimum]:
    """Read a tab-separated `<Family>_summary_known.csv` keyed by instance name."""
    out: dict[str, KnownOptimum] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = {"instance_name", "LB", "OPT"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}:1: missing columns {sorted(missing)}")
        for lineno, row in enumerate(reader, start=2):
            try:
                opt = int(row["OPT"])
                lb = int(row["LB"])
                best = row.get("best_overall")
                best_i = int(best) if best not in (None, "") else None
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{lineno}: malformed row {row}") from None
            out[row["instance_name"]] = KnownOptimum(
                name=row["instance_name"],
                lb=lb,
                opt=opt if opt > 0 else None,
                best_overall=best_i if best_i is not None and best_i > 0 else None,
            )
    return out
