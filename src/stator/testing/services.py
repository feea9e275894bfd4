"""Local etcd and NATS servers for tests and benchmarks: real binaries on free loopback ports.

``EtcdServer`` and ``NatsServer`` start ``etcd`` / ``nats-server`` (Debian packages
``etcd-server`` and ``nats-server``; ``scripts/bootstrap.sh --with-services`` installs them) as
child processes with their data and logs in a given directory, wait until they answer, and stop
them by PID (SIGTERM, then SIGKILL). ``EtcdServer.stop()`` + ``start()`` restarts etcd on the same
port and data directory (the re-registration tests need that).

etcd runs with a 10 ms heartbeat and a 100 ms election timeout: etcd's smallest lease TTL is
``ceil(1.5 * election timeout)`` rounded up to whole seconds (etcd ``lease/lessor.go``,
``minLeaseTTL``), so leases of 1 s work, which keeps the lease-expiry tests short.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

STOP_TIMEOUT_S = 5.0
"""How long a stopped server may take to exit after SIGTERM before it is SIGKILLed (s)."""


class ServiceError(RuntimeError):
    """A server binary is missing, or the server did not come up (the message says why)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str) -> str | None:
    """Path of ``name`` on ``$PATH`` (``/usr/sbin`` included: Debian puts nats-server there)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return shutil.which(name, path=path)


class _Server:
    """A child process with its log file, stopped by PID."""

    name = ""

    def __init__(self, workdir: Path, timeout_s: float) -> None:
        self.workdir = workdir
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running server, ``None`` when stopped."""
        return None if self.proc is None else self.proc.pid

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        """Start the server and wait until it answers.

        Raises:
            ServiceError: it exited or did not answer within ``timeout_s`` (log tail attached).
        """
        if self.proc is not None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = (self.workdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            self._command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.timeout_s
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"{self.name} did not start; log:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send ``sig`` to the server's PID and wait; SIGKILL after ``STOP_TIMEOUT_S``."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, num_bytes: int = 4000) -> str:
        """The end of the server's log."""
        path = self.workdir / f"{self.name}.log"
        return path.read_bytes()[-num_bytes:].decode(errors="replace") if path.exists() else ""

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EtcdServer(_Server):
    """A one-member etcd on ``127.0.0.1``; data in ``workdir/data``.

    ``url``: the client URL (``http://127.0.0.1:PORT``), stable across ``stop()``/``start()``.
    ``ports``: ``(client_port, peer_port)`` to reuse (e.g. another etcd's, to replace it with
    an empty one on the same URL); default: free ports.

    Raises:
        ServiceError: ``etcd`` is not installed.
    """

    name = "etcd"

    def __init__(
        self, workdir: Path, *, timeout_s: float = 20.0, ports: tuple[int, int] | None = None
    ) -> None:
        super().__init__(workdir, timeout_s)
        binary = find_binary("etcd")
        if binary is None:
            raise ServiceError("etcd is not installed (apt-get install etcd-server)")
        self.binary = binary
        self.client_port, self.peer_port = ports or (free_port(), free_port())
        self.url = f"http://127.0.0.1:{self.client_port}"

    def _command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            self.binary,
            "--name=stator-test",
            f"--data-dir={self.workdir / 'data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=stator-test={peer}",
            "--heartbeat-interval=10",
            "--election-timeout=100",
            "--logger=zap",
            "--log-level=warn",
        ]

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                return b'"true"' in response.read()
        except OSError:
            return False


class NatsServer(_Server):
    """A ``nats-server`` on ``127.0.0.1``; its log in ``workdir``.

    ``url``: ``nats://127.0.0.1:PORT``, stable across ``stop()``/``start()``.

    Raises:
        ServiceError: ``nats-server`` is not installed.
    """

    name = "nats-server"

    def __init__(self, workdir: Path, *, timeout_s: float = 10.0) -> None:
        super().__init__(workdir, timeout_s)
        binary = find_binary("nats-server")
        if binary is None:
            raise ServiceError("nats-server is not installed (apt-get install nats-server)")
        self.binary = binary
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                return sock.recv(4).startswith(b"INFO")
        except OSError:
            return False
