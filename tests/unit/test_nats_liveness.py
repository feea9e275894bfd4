"""``Liveness`` with a fake ping: who gets probed, and when a peer counts as lost."""

from __future__ import annotations

import asyncio

import nats.errors

from stator.runtime.request_plane.nats_liveness import Liveness

INTERVAL_S = 0.05


class Peers:
    """Fake peers: which answer, which are silent, which are gone."""

    def __init__(self) -> None:
        self.active: set[str] = set()
        self.gone: set[str] = set()
        self.hung: set[str] = set()
        self.pinged: list[str] = []
        self.lost: list[tuple[str, str]] = []

    async def ping(self, peer: str, timeout_s: float) -> object:
        self.pinged.append(peer)
        if peer in self.gone:
            raise nats.errors.NoRespondersError
        if peer in self.hung:
            await asyncio.sleep(timeout_s)
            raise nats.errors.TimeoutError
        return None

    def on_lost(self, peer: str, why: str) -> None:
        self.lost.append((peer, why))
        self.active.discard(peer)  # as the planes do: its streams are failed or cancelled

    def liveness(self, timeout_s: float = 0.1) -> Liveness:
        return Liveness(
            self.ping,
            lambda: set(self.active),
            self.on_lost,
            interval_s=INTERVAL_S,
            timeout_s=timeout_s,
        )


async def test_gone_and_hung_peers_are_lost_answering_ones_are_not() -> None:
    peers = Peers()
    peers.active = {"ok", "gone", "hung"}
    peers.gone, peers.hung = {"gone"}, {"hung"}
    liveness = peers.liveness()
    async with asyncio.timeout(2.0):
        while {peer for peer, _ in peers.lost} != {"gone", "hung"}:
            await asyncio.sleep(0.01)
    await liveness.close()
    reasons = dict(peers.lost)
    assert len(peers.lost) == 2
    assert "no responders" in reasons["gone"]
    assert "within 0.1 s" in reasons["hung"]
    assert "ok" in peers.pinged


async def test_peers_heard_from_or_without_streams_are_not_probed() -> None:
    peers = Peers()
    peers.gone = {"talkative", "idle"}  # would be lost if probed
    peers.active = {"talkative"}  # "idle" has no open stream
    liveness = peers.liveness()
    for _ in range(10):
        liveness.heard("talkative")
        await asyncio.sleep(INTERVAL_S / 2)
    await liveness.close()
    assert peers.lost == []
    assert peers.pinged == []


async def test_one_probe_at_a_time_per_peer() -> None:
    peers = Peers()
    peers.active, peers.hung = {"slow"}, {"slow"}
    liveness = peers.liveness(timeout_s=0.5)
    await asyncio.sleep(INTERVAL_S * 6)
    await liveness.close()
    assert peers.pinged == ["slow"]
