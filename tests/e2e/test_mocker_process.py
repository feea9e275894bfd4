"""``python -m stator.mocker`` as a real process (``file`` discovery in a tmp dir).

Every child is killed by PID in a ``finally``; its output goes under ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest, StopConditions
from stator.runtime.address import EndpointAddress
from stator.runtime.config import RuntimeConfig
from stator.runtime.discovery import keys
from stator.runtime.runtime import DistributedRuntime

NAMESPACE = "e2e"
ENDPOINT = EndpointAddress(NAMESPACE, "backend", "generate_tiny")
READY_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 15.0


class Mocker:
    """A mocker child process; stdout and stderr go to files under the test's tmp dir."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc = proc
        self.out = out
        self.err = err

    async def ready_ids(self) -> list[int]:
        """Wait for the ``mocker ready`` line; the instance ids it names."""
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                for line in self.out.read_text().splitlines():
                    if line.startswith("mocker ready:"):
                        return [int(x) for x in line.split(" instances ", 1)[1].split()]
                if self.proc.poll() is not None:
                    pytest.fail(f"mocker exited {self.proc.returncode}:\n{self.err.read_text()}")
                await asyncio.sleep(0.05)

    async def wait_exit(self) -> int:
        async with asyncio.timeout(EXIT_TIMEOUT_S):
            while self.proc.poll() is None:
                await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


Spawn = Callable[..., Mocker]


@pytest.fixture
def spawn(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Spawn]:
    made: list[Mocker] = []

    def start(*flags: str, model: bool = True) -> Mocker:
        index = len(made)
        out, err = tmp_path / f"mocker-{index}.out", tmp_path / f"mocker-{index}.err"
        argv = [sys.executable, "-m", "stator.mocker"]
        if model:
            argv += ["--model-path", str(tiny_model_dir), "--model-name", "tiny"]
        argv += ["--discovery-dir", str(tmp_path / "discovery"), "--lease-ttl", "2", *flags]
        with out.open("wb") as out_f, err.open("wb") as err_f:
            proc = subprocess.Popen(argv, stdout=out_f, stderr=err_f)
        made.append(Mocker(proc, out, err))
        return made[-1]

    yield start
    for mocker in made:
        mocker.kill()


@pytest.fixture
async def client_rt(tmp_path: Path) -> AsyncIterator[DistributedRuntime]:
    config = RuntimeConfig(
        namespace=NAMESPACE, discovery_dir=str(tmp_path / "discovery"), lease_ttl_s=2.0
    )
    rt = await DistributedRuntime.create(config)
    yield rt
    await rt.shutdown(drain_timeout_s=1.0)


async def test_mocker_process_serves_a_client_and_exits_cleanly_on_sigterm(
    spawn: Spawn, client_rt: DistributedRuntime
) -> None:
    mocker = spawn(
        "--endpoint", str(ENDPOINT), "--num-workers", "2", "--block-size", "16",
        "--num-gpu-blocks-override", "256", "--speedup-ratio", "50",
    )  # fmt: skip
    ids = await mocker.ready_ids()
    assert len(set(ids)) == 2
    client = await client_rt.endpoint(ENDPOINT).client()
    await client.wait_for_instances(timeout_s=10.0)
    async with asyncio.timeout(10.0):
        while sorted(client.instance_ids()) != sorted(ids):
            await asyncio.sleep(0.05)
    request = PreprocessedRequest(
        token_ids=list(range(1, 81)),
        stop_conditions=StopConditions(max_tokens=12, ignore_eos=True),
    )
    for instance_id in ids:
        chunks = [
            c async for c in client.generate(request, LLMEngineOutput, instance_id=instance_id)
        ]
        assert sum(len(c.token_ids) for c in chunks) == 12
        assert chunks[-1].finish_reason == "length"
    discovery = client_rt.discovery
    own = [keys.instance_key(ENDPOINT, i) for i in ids] + [
        keys.model_card_key(ENDPOINT, i) for i in ids
    ]
    assert all([await discovery.get(k) is not None for k in own])

    mocker.proc.send_signal(signal.SIGTERM)
    assert await mocker.wait_exit() == 0
    for key in own:
        assert await discovery.get(key) is None
    for topic in ("kv-events", "kv-metrics"):
        for i in ids:
            channel = keys.event_channel_key(NAMESPACE, "backend", topic, i)
            assert await discovery.get(channel) is None


async def test_default_endpoint_is_model_specific(
    spawn: Spawn, client_rt: DistributedRuntime
) -> None:
    mocker = spawn("--namespace", NAMESPACE, "--startup-time", "0.2")
    (instance_id,) = await mocker.ready_ids()
    out = mocker.out.read_text()
    assert "dyn://e2e.backend.generate_tiny_" in out
    assert str(instance_id) in out
    mocker.proc.send_signal(signal.SIGINT)
    assert await mocker.wait_exit() == 0


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--block-size", "0"], "--block-size"),
        (["--no-such-flag"], "--no-such-flag"),
        (["--endpoint", "dyn://only.two"], "--endpoint"),
        (["--model-path", "/nonexistent/model/dir"], "--model-path"),
        (["--speedup-ratio", "fast"], "--speedup-ratio"),
    ],
)
def test_bad_flag_exits_nonzero_naming_it(spawn: Spawn, flags: list[str], named: str) -> None:
    mocker = spawn(*flags, model=named != "--model-path")
    assert mocker.proc.wait(timeout=EXIT_TIMEOUT_S) != 0
    assert named in mocker.err.read_text()


# -- with the frontend ------------------------------------------------------------------------


class Frontend:
    """``python -m stator.frontend`` on an ephemeral port; output under the test's tmp dir."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc = proc
        self.out = out
        self.err = err

    async def url(self) -> str:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while True:
                for line in self.out.read_text().splitlines():
                    if line.startswith("stator frontend listening on"):
                        return line.rsplit(" ", 1)[-1]
                if self.proc.poll() is not None:
                    pytest.fail(f"frontend exited {self.proc.returncode}:\n{self.err.read_text()}")
                await asyncio.sleep(0.05)


@pytest.fixture
def frontend(tmp_path: Path) -> Iterator[Callable[..., Frontend]]:
    made: list[Frontend] = []

    def start(*flags: str) -> Frontend:
        out, err = tmp_path / "frontend.out", tmp_path / "frontend.err"
        argv = [sys.executable, "-m", "stator.frontend", "--http-host", "127.0.0.1",
                "--http-port", "0", "--discovery-dir", str(tmp_path / "discovery"),
                "--lease-ttl", "2", "--log-level", "warning", *flags]  # fmt: skip
        with out.open("wb") as out_f, err.open("wb") as err_f:
            made.append(Frontend(subprocess.Popen(argv, stdout=out_f, stderr=err_f), out, err))
        return made[-1]

    yield start
    for fe in made:
        if fe.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(fe.proc.pid, signal.SIGKILL)
            fe.proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("router_mode", ["round-robin", "kv"])
async def test_frontend_and_mocker_answer_the_openai_sdk(
    spawn: Spawn, frontend: Callable[..., Frontend], router_mode: str
) -> None:
    openai = pytest.importorskip("openai")
    mocker = spawn("--num-workers", "2", "--speedup-ratio", "20")
    fe = frontend("--router-mode", router_mode)
    await mocker.ready_ids()
    url = await fe.url()
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            while not [m async for m in client.models.list()]:
                await asyncio.sleep(0.1)
        models = [m.id async for m in client.models.list()]
        assert models == ["tiny"]

        chat = await client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        reasons, usage = [], None
        async for chunk in chat:
            reasons += [c.finish_reason for c in chunk.choices if c.finish_reason]
            usage = chunk.usage or usage
        assert reasons == ["length"]
        assert usage is not None and usage.completion_tokens == 8

        cached: list[int] = []
        for _ in range(3):  # round-robin or kv: a repeat lands on a worker that has the prefix
            completion = await client.completions.create(
                model="tiny",
                prompt="def main(argv):\n    return 0\n" * 20,
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
            finishes, usage = [], None
            async for chunk in completion:
                finishes += [c.finish_reason for c in chunk.choices if c.finish_reason]
                usage = chunk.usage or usage
            assert finishes == ["length"]
            assert usage is not None and usage.prompt_tokens_details is not None
            cached.append(usage.prompt_tokens_details.cached_tokens or 0)
        assert cached[0] == 0
        assert max(cached[1:]) > 0

        whole = await client.completions.create(
            model="tiny", prompt="x = 1", max_tokens=4, extra_body={"ignore_eos": True}
        )
        assert whole.usage is not None and whole.usage.completion_tokens == 4
        assert whole.choices[0].finish_reason == "length"
    finally:
        await client.close()
    mocker.proc.send_signal(signal.SIGTERM)
    assert await mocker.wait_exit() == 0
