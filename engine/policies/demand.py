"""What an instance takes from a node: its billed spec plus its runtime's overhead."""

from __future__ import annotations

import math
from decimal import Decimal

# docs/design.md §3.7's measured memory overhead per sandbox (MB, taken as MiB), like RuntimeClass
# overhead in Kubernetes.
MEMORY_OVERHEAD_MIB = {"runc": 15, "kata": 136}
DIMENSIONS = ("millicores", "memory_mib", "enis", "pods")


def demand_of(
    vcpu: Decimal, memory_gib: Decimal, runtime: str, cpu_overhead_millicores: dict[str, int]
) -> dict[str, int]:
    return {
        "millicores": math.ceil(vcpu * 1000) + cpu_overhead_millicores.get(runtime, 0),
        "memory_mib": math.ceil(memory_gib * 1024) + MEMORY_OVERHEAD_MIB[runtime],
        "enis": 1,  # each instance takes one elastic network interface
        "pods": 1,
    }
