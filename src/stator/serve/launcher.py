"""Start, supervise and stop the processes of a deployment graph.

Each component replica is ``python -m MODULE ARGS`` in its own session (process group), with its
stdout and stderr merged and streamed line by line with a ``[name]`` prefix. ``stop()`` sends
SIGTERM to every group, waits ``grace_s`` seconds, then SIGKILLs what is left, so no process is
left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stator.serve.graph import ComponentSpec, Graph

LogSink = Callable[[str], None]


@dataclass(slots=True)
class ChildProcess:
    """One running replica."""

    name: str
    proc: asyncio.subprocess.Process
    pump: asyncio.Task[None]


class Launcher:
    """Runs a ``Graph``. ``common_argv`` (runtime flags) is given to every component."""

    def __init__(
        self,
        graph: Graph,
        *,
        common_argv: Sequence[str] = (),
        env: dict[str, str] | None = None,
        log: LogSink = print,
        python: str = sys.executable,
    ) -> None:
        self.graph = graph
        self._common_argv = list(common_argv)
        self._env = {**os.environ, **graph.env, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self._log = log
        self._python = python
        self.children: list[ChildProcess] = []

    async def start(self) -> None:
        """Start every replica of every component (workers first, the frontend last)."""
        ordered = sorted(self.graph.components, key=lambda c: c.kind == "frontend")
        for spec in ordered:
            for replica in range(spec.replicas):
                name = spec.name if spec.replicas == 1 else f"{spec.name}-{replica}"
                await self._spawn(name, spec)

    async def _spawn(self, name: str, spec: ComponentSpec) -> None:
        argv = [spec.python or self._python, "-m", spec.module, *self._common_argv, *spec.argv]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env,
            start_new_session=True,
        )
        pump = asyncio.create_task(self._pump(name, proc))
        self.children.append(ChildProcess(name, proc, pump))
        self._log(f"[serve] started {name} (pid {proc.pid}): python -m {spec.module}")

    async def _pump(self, name: str, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            self._log(f"[{name}] {line.decode(errors='replace').rstrip()}")

    async def wait_first_exit(self) -> tuple[str, int]:
        """Return ``(name, exit_code)`` of the first replica to exit."""
        waits = {asyncio.create_task(c.proc.wait()): c for c in self.children}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        child = waits[next(iter(done))]
        return child.name, int(child.proc.returncode or 0)

    async def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every replica's process group, wait ``grace_s``, SIGKILL the rest."""
        live = [c for c in self.children if c.proc.returncode is None]
        for child in live:
            _signal_group(child.proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.proc.wait() for c in live)), timeout=grace_s)
        for child in self.children:
            _signal_group(child.proc.pid, signal.SIGKILL)
            if child.proc.returncode is None:
                self._log(f"[serve] {child.name} did not stop in {grace_s:.0f} s: killed")
                await child.proc.wait()
        await asyncio.gather(*(c.pump for c in self.children), return_exceptions=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
