"""Named limits of the public contract: every input is bounded, and each bound has a name
that the JSON Schema, the README and the rejection reasons use. Imports nothing of ours."""

from __future__ import annotations

from datetime import UTC, datetime

# Times a command or a query may speak of: [TIME_MIN, TIME_MAX).
TIME_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(2100, 1, 1, tzinfo=UTC)

# Kafka's default maximum message size (message.max.bytes): nothing we send may exceed it.
BROKER_MAX_MESSAGE_BYTES = 1_048_576

# --- one input line (a Kafka record, a line of `cis apply`) ---------------------------------
# Checked before any parsing. A maximal CreateInstance line yields a RunPod well under
# BROKER_MAX_MESSAGE_BYTES (the manifest repeats what the tenant sent, plus a fixed frame).
MAX_LINE_BYTES = 262_144
# --- one batch (one transaction, one cell-log event per cell) -------------------------------
# The bytes of the lines one batch may hold: each decided command is kept in its cell-log
# entry, so a batch of maximal lines must not make an event near PostgreSQL's 1 GB value
# limit, nor a writer's memory balloon. A batch is cut at this many bytes or at its size.
MAX_BATCH_BYTES = 8 * 1_048_576
# Nesting of arrays and objects; the deepest command is 4 deep (containers[].env{}).
MAX_DEPTH = 32

# --- text ---------------------------------------------------------------------------------
MAX_COMMAND_ID_CHARS = 128
MAX_LABEL_CHARS = 63  # a label key or value, a VPC, subnet or security group
MAX_TEXT_CHARS = 255  # an image, a reason
MAX_ARG_CHARS = 4096  # one command argument, one environment value
MAX_ENV_NAME_CHARS = 128
MAX_DECIMAL_CHARS = 64  # a decimal written as a JSON string

# --- lists and maps -------------------------------------------------------------------------
MAX_CONTAINERS = 10
MAX_INIT_CONTAINERS = 10
MAX_ARGS = 64
MAX_ENV_VARS = 100
MAX_PORTS = 20
MAX_SECURITY_GROUPS = 5
MAX_ACCOUNT_NETWORK_IDS = 100  # an account's VPCs, subnets or security groups in a cell (each)
MAX_NODE_SELECTOR = 10
MAX_NODE_MODELS = 20
MAX_POOL_LABELS = 20
MAX_CATALOGUE = 200

# --- integers: every accepted value fits a signed 64-bit column ---------------------------
MAX_MILLICORES = 1_024_000  # a node model's cores, a runtime's overhead per instance
MAX_MEMORY_MIB = 16_777_216
MAX_NODE_ENIS = 1024
MAX_NODE_PODS = 1024
MAX_POOL_NODES = 100_000
MAX_ACCOUNT_VCPU = 1_000_000  # an account's vCPU quota in a cell
MAX_LAUNCH_BURST = 100_000  # an account's launch token bucket: its size ...
MAX_LAUNCH_RATE = 100_000  # ... and its refill, tokens per second
MAX_TIMEOUT_SECONDS = 604_800  # a pool's start timeouts (issue 14): at most a week
MAX_RETRY_RESTARTS = 10_000  # an instance's retry budget: restarts allowed per window
MAX_RETRY_WINDOW_SECONDS = 604_800
MAX_REPORT_SEQUENCE = 2**63 - 1  # a report's per-instance sequence (a resourceVersion)
MAX_RUNTIME_START_MS = 600_000  # a runtime profile's sandbox start
MAX_RUNTIME_IMAGE_MB = 65_536  # a runtime profile's own image

# --- outcomes: one outcome stays under MAX_OUTCOME_BYTES of JSON ---------------------------
MAX_OUTCOME_BYTES = 65_536
MAX_OUTCOME_EVENTS = 50  # the first event ids; `events_total` counts them all
MAX_OUTCOME_REASONS = 20  # the first reasons, then one that says how many more
MAX_REASON_FIELD_CHARS = 100
MAX_REASON_PROBLEM_CHARS = 240
MAX_REASON_CODE_CHARS = 40
MAX_NOTE_CHARS = 1000
MAX_EVENT_ID_CHARS = 128


def named_limits() -> dict[str, int]:
    """Every integer limit of this module by name: the `x-limits` of the JSON Schemas."""
    return {name: value for name, value in globals().items()
            if name.startswith(("MAX_", "BROKER_")) and isinstance(value, int)}
