"""Round a requested (vCPU, GiB) up to the spec we bill (docs/design.md §3.3).

The billed spec is the cheapest catalogue spec that holds both dimensions, priced at
`weights`: the engine passes the cell's own rates per vCPU-second and GiB-second of the price
version in force at the command's time (the runtime's rates if the version has some). Ties
go to the smaller vCPU, then the smaller memory (so free rates bill the smallest covering
spec). Rejections are data and list every reason, so a caller can show all of them at once
instead of making the user fix one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation


@dataclass(frozen=True, slots=True, order=True)
class Spec:
    vcpu: Decimal
    memory_gib: Decimal


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class SpecChoice:
    requested: Spec
    billed: Spec
    # The node model a dedicated pool's node selector forces, when it raised the billed spec
    # to one that takes that model (docs/design.md §3.3); None for a plain round-up.
    model: str | None = None


@dataclass(frozen=True, slots=True)
class SpecRejected:
    reasons: tuple[Reason, ...]


def _grid(vcpu: str, memories: Sequence[int | str]) -> list[Spec]:
    return [Spec(Decimal(vcpu), Decimal(str(m))) for m in memories]


# Fargate's task-size table (Linux, x86/ARM).
DEFAULT_CATALOGUE: tuple[Spec, ...] = tuple(
    _grid("0.25", ["0.5", 1, 2])
    + _grid("0.5", range(1, 5))
    + _grid("1", range(2, 9))
    + _grid("2", range(4, 17))
    + _grid("4", range(8, 31))
    + _grid("8", range(16, 61, 4))
    + _grid("16", range(32, 121, 8))
)

# Relative cost of one vCPU vs one GiB, used only to order specs by price (Fargate list
# prices per hour; only the ratio matters) where no price book speaks (offline tools); the
# engine always passes the cell's own rates.
DEFAULT_WEIGHTS: tuple[Decimal, Decimal] = (Decimal("0.04048"), Decimal("0.004445"))


def _parse(name: str, value: object, reasons: list[Reason]) -> Decimal | None:
    """Exact positive Decimal, or None after recording why not."""
    if isinstance(value, bool) or isinstance(value, float):
        # Floats are not exact; bools are ints by accident.
        reasons.append(Reason(f"{name}_not_exact", f"{name} must be a Decimal, int or str"))
        return None
    try:
        d = Decimal(value) if isinstance(value, int | str) else value
    except InvalidOperation:
        d = None
    if not isinstance(d, Decimal) or not d.is_finite():
        reasons.append(Reason(f"{name}_not_a_number", f"{name} is not a finite number"))
        return None
    if d <= 0:
        reasons.append(Reason(f"{name}_not_positive", f"{name} must be > 0, got {d}"))
        return None
    return d


def round_up(
    vcpu: Decimal | int | str,
    memory_gib: Decimal | int | str,
    catalogue: Sequence[Spec] = DEFAULT_CATALOGUE,
    weights: tuple[Decimal, Decimal] = DEFAULT_WEIGHTS,
) -> SpecChoice | SpecRejected:
    reasons: list[Reason] = []
    if not catalogue:
        reasons.append(Reason("empty_catalogue", "the spec catalogue is empty"))
    v = _parse("vcpu", vcpu, reasons)
    m = _parse("memory_gib", memory_gib, reasons)
    if catalogue:
        max_v = max(s.vcpu for s in catalogue)
        max_m = max(s.memory_gib for s in catalogue)
        if v is not None and v > max_v:
            reasons.append(Reason("vcpu_above_catalogue", f"vcpu {v} > largest offered {max_v}"))
        if m is not None and m > max_m:
            reasons.append(
                Reason("memory_gib_above_catalogue", f"memory_gib {m} > largest offered {max_m}")
            )
    if reasons or v is None or m is None:
        return SpecRejected(tuple(reasons))
    fits = [s for s in catalogue if s.vcpu >= v and s.memory_gib >= m]
    if not fits:
        # Each dimension fits some spec, but no single spec holds both.
        return SpecRejected(
            (Reason("no_spec_holds_both", f"no catalogue spec holds {v} vCPU with {m} GiB"),)
        )
    wv, wm = weights
    billed = min(fits, key=lambda s: (s.vcpu * wv + s.memory_gib * wm, s.vcpu, s.memory_gib))
    return SpecChoice(requested=Spec(v, m), billed=billed)
