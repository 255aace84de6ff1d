"""Stored events decoded for the projections: the mapper's answer, for less.

The mapper (eventsourcing `Mapper.to_domain_event` with engine/transcoder.py) walks every
nested list and dict of an event's state looking for typed values (`{"_type_", "_data_"}`:
datetimes, decimals). In this log they sit at the top level only (an instance's
`containers`, `network`, `demand` are plain JSON), and that walk was a fifth of a rebuild's
client CPU. So: turn the top-level typed values back into objects, and count them against
the `"_type_"` keys the stored bytes hold; any other (a typed value nested deeper), and the
event is decoded by the mapper instead. (Inside a JSON string a quote is escaped, so
`"_type_"` in the bytes is always a key.) Anything unusual — a cipher, a compressor, bytes
that do not parse — goes to the mapper too, which names the event it cannot read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from eventsourcing.persistence import find_id_convertor
from eventsourcing.utils import resolve_topic

_TYPED = b'"_type_"'


def decoder(mapper: Any) -> Callable[[Any], Any]:
    """A function of a stored event (or notification) to its domain event, equal to
    `mapper.to_domain_event`'s."""
    names = getattr(mapper.transcoder, "names", None)
    # (A mapper whose method was replaced on the instance, e.g. wrapped to count what it
    # decodes, is used as it is.)
    if mapper.cipher or mapper.compressor or names is None or \
            "to_domain_event" in vars(mapper):
        return mapper.to_domain_event  # type: ignore[no-any-return]
    full = mapper.to_domain_event
    classes: dict[str, tuple[type, int]] = {}

    def decode(stored: Any) -> Any:
        data = stored.state
        if type(data) is not bytes:
            data = bytes(data)
        try:
            state = orjson.loads(data)
        except orjson.JSONDecodeError:
            return full(stored)
        if type(state) is not dict:
            return full(stored)
        typed = 0
        for key, value in state.items():
            if type(value) is dict and len(value) == 2:
                kind, text = value.get("_type_"), value.get("_data_")
                if type(kind) is str and type(text) is str and kind in names:
                    state[key] = names[kind].decode(text)
                    typed += 1
        if typed != data.count(_TYPED):
            return full(stored)  # a typed value nested deeper (or one it does not know)
        found = classes.get(stored.topic)
        if found is None:
            cls = resolve_topic(stored.topic)
            found = classes[stored.topic] = (cls, getattr(cls, "class_version", 1))
        cls, version = found
        if state.get("class_version", 1) != version:
            return full(stored)  # upcast by the mapper
        state.pop("class_version", None)
        state["originator_id"] = find_id_convertor(cls, type(stored.originator_id))(
            stored.originator_id)
        state["originator_version"] = stored.originator_version
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event

    return decode
