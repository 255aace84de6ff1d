"""Container runtime profiles as data: what each sandbox costs to start and to keep.

The seed measured three runtimes (docs/design.md §3.7): `runc` (plain containers), `kata`
(the seed's Clear Containers row: a micro-VM per Pod) and `hyper` (HyperContainer, also a
micro-VM). A pool may override any runtime's profile (`ConfigurePool.runtime_profiles`);
whatever it leaves out comes from the seed. Placement reads the memory overhead, Pod
manifests declare it as RuntimeClass `overhead.podFixed`, simulations wait the start time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RUNTIMES = ("runc", "kata", "hyper")
# Only a sandboxed runtime (a VM boundary per Pod) may share a node with other tenants.
SANDBOXED = frozenset({"kata", "hyper"})
# A CreateInstance that names no runtime gets its pool's default.
DEFAULT_BY_KIND = {"dedicated": "runc", "shared": "kata"}


@dataclass(frozen=True, slots=True)
class RuntimeProfile:
    start_ms: int  # sandbox start, from RunPod to the containers starting
    image_mb: int  # the runtime's own image (guest kernel and agent), pulled once per node
    memory_overhead_mib: int  # per Pod, beside the containers (MB taken as MiB)


SEED_PROFILES: dict[str, RuntimeProfile] = {
    "runc": RuntimeProfile(start_ms=632, image_mb=0, memory_overhead_mib=15),
    "kata": RuntimeProfile(start_ms=1249, image_mb=62, memory_overhead_mib=136),
    "hyper": RuntimeProfile(start_ms=3256, image_mb=11, memory_overhead_mib=80),
}
# A sandbox's vCPU overhead per Pod (ConfigurePool.cpu_overhead_millicores' default).
DEFAULT_CPU_OVERHEAD_MILLICORES = {"runc": 0, "kata": 100, "hyper": 100}
# Seconds from RunPod to running, per runtime, as the simulations wait them.
START_SECONDS = {name: p.start_ms / 1000 for name, p in SEED_PROFILES.items()}


def profiles(config: Mapping[str, Any]) -> dict[str, RuntimeProfile]:
    """A pool's runtime profiles: the seed's, with the pool's overrides on top (pools
    configured before profiles existed have none)."""
    overrides = config.get("runtime_profiles") or {}
    return {name: RuntimeProfile(**overrides[name]) if name in overrides else seed
            for name, seed in SEED_PROFILES.items()}


def isolation_problem(kind: str, runtime: str) -> str | None:
    """Why `runtime` may not run in a pool of `kind`, or None.

    Shared pools pack several tenants on a node, so only a sandboxed runtime keeps them
    apart; runc shares the host kernel and runs only on dedicated nodes (one instance, so
    one tenant, per VM)."""
    if kind == "shared" and runtime not in SANDBOXED:
        return (f"runtime {runtime!r} is not sandboxed: a shared pool runs only "
                f"{', '.join(sorted(SANDBOXED))}; runc runs on dedicated pools (one tenant "
                "per VM)")
    return None
