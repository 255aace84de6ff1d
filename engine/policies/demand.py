"""What an instance takes from a node: its billed spec plus its runtime's overhead."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from engine.policies.runtimes import profile

DIMENSIONS = ("millicores", "memory_mib", "enis", "pods")


def demand_of(vcpu: Decimal, memory_gib: Decimal, runtime: str,
              config: Mapping[str, Any]) -> dict[str, int]:
    """The billed spec plus the pool's overhead for `runtime`: its cpu_overhead_millicores
    and its runtime profile's memory overhead (as RuntimeClass `overhead.podFixed` declares
    them to Kubernetes)."""
    return {
        "millicores": math.ceil(vcpu * 1000)
        + config["cpu_overhead_millicores"].get(runtime, 0),
        "memory_mib": math.ceil(memory_gib * 1024)
        + profile(config, runtime).memory_overhead_mib,
        "enis": 1,  # each instance takes one elastic network interface
        "pods": 1,
    }
