"""Network ownership: an operator registers the VPCs, subnets and security groups each account
owns in a cell (`SetAccountNetworks`); an id registered to some accounts may be named on a
create only by them. The ids go to the node's CNI as the Pod's ENI annotations, and ids are not
secrets (logs, errors, tickets), so without this one tenant could put its ENI in another's
subnet and security group. An id nobody registered stays free to name, as before
registration existed: existing producers keep working, and the operator closes a network by
registering it (docs/design.md §2.8)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

NOT_OWNED = "network_not_owned"

Owners = Callable[[str, str], frozenset[str]]  # (kind, id) -> accounts registered to it


def not_owned(account: str, cell: str, owners: Owners, vpc: str, subnet: str,
              security_groups: Sequence[str]) -> list[dict[str, str]]:
    """One reason per id the create names that is registered to other accounts only, in the
    order the create names them. The other accounts are not named: that would tell one tenant
    who another is."""
    named = [("network.vpc", "vpc", "VPC", vpc), ("network.subnet", "subnet", "subnet", subnet),
             *((f"network.security_groups[{k}]", "security_group", "security group", group)
               for k, group in enumerate(security_groups))]
    reasons = []
    for field, kind, label, ident in named:
        registered = owners(kind, ident)
        if registered and account not in registered:
            reasons.append({"field": field, "code": NOT_OWNED,
                            "problem": f"{label} {ident!r} is registered to another account in "
                                       f"cell {cell!r}, not to {account!r} (an operator "
                                       "registers networks with SetAccountNetworks)"})
    return reasons
