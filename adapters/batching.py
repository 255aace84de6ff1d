"""Cutting a stream of input lines into batches: at most `size` lines, and at most
MAX_BATCH_BYTES of them (docs/design.md §5.2), so no tenant's maximal lines make one batch's
cell-log event huge."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from schemas.limits import MAX_BATCH_BYTES

T = TypeVar("T")


def batches(items: Iterable[T], size: int, weight: Callable[[T], int] = len,  # type: ignore[assignment]
            max_bytes: int = MAX_BATCH_BYTES) -> Iterator[list[T]]:
    """Consecutive batches of `items`, in order: each ends at `size` items or once its
    weight reaches `max_bytes` (a single heavier item is a batch of its own)."""
    batch: list[T] = []
    held = 0
    for item in items:
        batch.append(item)
        held += weight(item)
        if len(batch) >= size or held >= max_bytes:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def cut(items: Sequence[T], size: int, weight: Callable[[T], int]) -> Iterator[Sequence[T]]:
    """`batches` over a sequence, as slices of it."""
    start = 0
    for batch in batches(items, size, weight):
        yield items[start:start + len(batch)]
        start += len(batch)
