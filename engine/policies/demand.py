"""The dimensions of what an instance takes from a node (its demand) and a node holds.

The demand itself is its billed spec plus its runtime's overhead: `PoolConfig.demand`
(engine/domain/pool_config.py), since the overheads are the pool's.
"""

from __future__ import annotations

DIMENSIONS = ("millicores", "memory_mib", "enis", "pods")
