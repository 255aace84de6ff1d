"""The library's JSON event format, encoded by orjson.

Events are stored exactly as eventsourcing's `JSONTranscoder` writes them (compact,
UTF-8, `{"_type_", "_data_"}` for datetimes and decimals), so either can read what the other
wrote; only encoding changes, which took a sixth of the time of applying a command.
`tests/test_transcoder.py` holds the two byte for byte equal on every event the demo writes.
"""

from __future__ import annotations

from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder

# Datetimes go through the registered transcoding, like the library; decimals always do
# (orjson has no native form for them). UUIDs would not (orjson writes them as plain strings),
# so events carry names, never UUID objects.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


class OrjsonTranscoder(JSONTranscoder):
    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=self._encode_obj, option=_OPTIONS)
