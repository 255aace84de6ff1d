"""What `cis simulate --what-if` changes in the recorded commands before re-running them.

Only the operator's own commands change: every ConfigurePool takes another placement policy
or scale-in threshold, every PublishPriceBook other terms (its `effective_from`, cell and
id stay). Everything else (the tenants' commands, the infrastructure's reports, the Ticks)
is re-run as recorded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.commands import ConfigurePool, PublishPriceBook

# A price book's identity and time: kept from the recorded command, never from the file.
KEPT = {"type", "schema_version", "command_id", "cell", "issued_at", "effective_from"}
PRICE_TERMS = tuple(sorted(set(PublishPriceBook.model_fields) - KEPT))
POLICY_DEFAULT = ConfigurePool.model_fields["placement_policy"].default
THRESHOLD_DEFAULT = ConfigurePool.model_fields["scale_down_utilisation_threshold"].default


@dataclass
class Policy:
    placement_policy: str | None = None
    scale_down_threshold: float | None = None
    price_terms: dict[str, Any] | None = None  # PublishPriceBook fields replacing recorded ones
    changed: Counter[str] = field(default_factory=Counter)  # commands changed, by type

    @property
    def same(self) -> bool:
        return (self.placement_policy, self.scale_down_threshold, self.price_terms) == (
            None, None, None)

    def describe(self) -> str:
        parts = []
        if self.placement_policy is not None:
            parts.append(f"placement policy {self.placement_policy}")
        if self.scale_down_threshold is not None:
            parts.append(f"scale-in threshold {self.scale_down_threshold:g}")
        if self.price_terms is not None:
            parts.append("price book " + ", ".join(f"{k}={v}" for k, v in
                                                   sorted(self.price_terms.items())))
        return "; ".join(parts) or "the same policy (no change)"

    def rewrite(self, command: dict[str, Any]) -> dict[str, Any]:
        """The command as the what-if run decides from it (counted in `changed` if it
        differs in effect: a default made explicit is no change)."""
        new = dict(command)
        if command.get("type") == "ConfigurePool":
            if self.placement_policy is not None:
                new["placement_policy"] = self.placement_policy
            if self.scale_down_threshold is not None:
                new["scale_down_utilisation_threshold"] = self.scale_down_threshold
            was = (command.get("placement_policy", POLICY_DEFAULT),
                   command.get("scale_down_utilisation_threshold", THRESHOLD_DEFAULT))
            if was != (new.get("placement_policy", POLICY_DEFAULT),
                       new.get("scale_down_utilisation_threshold", THRESHOLD_DEFAULT)):
                self.changed["ConfigurePool"] += 1
        elif command.get("type") == "PublishPriceBook" and self.price_terms is not None:
            new.update(self.price_terms)
            if _book(new) != _book(command):
                self.changed["PublishPriceBook"] += 1
        return new


def _book(command: dict[str, Any]) -> Any:
    try:
        return PublishPriceBook.model_validate(command).model_dump(include=set(PRICE_TERMS))
    except ValidationError:
        return command  # compared as given: the engine rejects it either way


def read_price_terms(path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """A JSON object of PublishPriceBook terms (e.g. {"rate_per_vcpu_second": "0.0000135"});
    each problem named, none stops the reading of the others."""
    try:
        terms = orjson.loads(path.read_bytes())  # depth-bounded: a hostile file is an error
    except (OSError, ValueError) as exc:
        return None, [f"{path}: {exc}"]
    if not isinstance(terms, dict) or not terms:
        return None, [f"{path}: give a JSON object of price-book terms ({', '.join(PRICE_TERMS)})"]
    problems = [f"{path}: {key!r} is not a price-book term that can be replaced (give "
                f"{', '.join(PRICE_TERMS)})" for key in sorted(terms) if key not in PRICE_TERMS]
    now = datetime(2000, 1, 1, tzinfo=UTC).isoformat()
    try:  # the terms as a whole price book would take them
        PublishPriceBook.model_validate({**terms, "type": "PublishPriceBook", "command_id": "x",
                                         "cell": "x", "issued_at": now,
                                         "effective_from": now})
    except ValidationError as exc:
        problems += [f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}"
                     for e in exc.errors() if e["loc"] and e["loc"][0] in PRICE_TERMS]
    return (None if problems else terms), problems
