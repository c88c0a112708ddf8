"""The fault proxy itself, with a real mosquitto behind it: each fault does what it says."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import aiomqtt
import pytest
from faults.proxy import FaultProxy
from mosquitto_broker import Mosquitto


@pytest.fixture
def proxy(mosquitto: Mosquitto) -> Iterator[FaultProxy]:
    p = FaultProxy(mosquitto.host, mosquitto.port)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _client(proxy: FaultProxy, ident: str, keepalive: int = 60) -> aiomqtt.Client:
    return aiomqtt.Client(proxy.host, proxy.port, identifier=ident, keepalive=keepalive, timeout=3)


async def _roundtrip(proxy: FaultProxy, mosquitto: Mosquitto, payload: bytes) -> float:
    """Publishes through the proxy, receives directly from the broker; returns seconds taken."""
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="direct-sub") as sub:
        await sub.subscribe("proxy/test", qos=1)
        async with _client(proxy, "via-proxy") as pub:
            started = time.monotonic()
            await pub.publish("proxy/test", payload, qos=1)
            async with asyncio.timeout(5):
                async for message in sub.messages:
                    assert message.payload == payload
                    return time.monotonic() - started
    raise AssertionError("no message")


async def test_forwards_both_ways(proxy: FaultProxy, mosquitto: Mosquitto) -> None:
    await _roundtrip(proxy, mosquitto, b"hello")
    assert proxy.stats.accepted == 1
    assert proxy.stats.bytes_up > 0
    assert proxy.stats.bytes_down > 0


async def test_delay_holds_every_chunk_and_keeps_order(
    proxy: FaultProxy, mosquitto: Mosquitto
) -> None:
    proxy.set_delay(150)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="direct-sub") as sub:
        await sub.subscribe("proxy/order", qos=1)
        async with _client(proxy, "via-proxy") as pub:
            started = time.monotonic()
            for i in range(50):
                await pub.publish("proxy/order", str(i), qos=0)
            seen = []
            async with asyncio.timeout(10):
                async for message in sub.messages:
                    seen.append(int(bytes(message.payload)))  # type: ignore[arg-type]
                    if len(seen) == 50:
                        break
            elapsed = time.monotonic() - started
    assert seen == list(range(50))
    # the fault is injected: nothing can cross before the delay has passed
    assert elapsed >= 0.15


async def test_stall_holds_bytes_until_heal(proxy: FaultProxy, mosquitto: Mosquitto) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="direct-sub") as sub:
        await sub.subscribe("proxy/stall", qos=1)
        async with _client(proxy, "via-proxy") as pub:
            proxy.stall()
            publish = asyncio.ensure_future(pub.publish("proxy/stall", b"held", qos=1))
            done, _ = await asyncio.wait({publish}, timeout=0.7)
            assert not done, "a stalled link must not deliver the PUBACK"
            proxy.heal()
            await asyncio.wait_for(publish, 5)
            async with asyncio.timeout(5):
                message = await anext(aiter(sub.messages))
            assert message.payload == b"held"


async def test_cut_resets_the_session_and_refuse_blocks_reconnects(
    proxy: FaultProxy, mosquitto: Mosquitto
) -> None:
    client = _client(proxy, "cut-me")
    await client.__aenter__()
    try:
        proxy.cut()
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(5):
                while True:
                    await client.publish("proxy/cut", b"x", qos=1)
                    await asyncio.sleep(0.05)
    finally:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)
    assert proxy.stats.cuts == 1
    proxy.refuse()
    with pytest.raises(aiomqtt.MqttError):
        async with _client(proxy, "refused"):
            pass
    assert proxy.stats.refused >= 1
    proxy.heal()
    await _roundtrip(proxy, mosquitto, b"back")


async def test_blackhole_loses_bytes_and_keepalive_ends_the_session(
    proxy: FaultProxy, mosquitto: Mosquitto
) -> None:
    client = _client(proxy, "hole", keepalive=1)
    await client.__aenter__()
    try:
        proxy.blackhole()
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(10):
                async for _ in client.messages:
                    pass
    finally:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)
    # the proxy counts what it swallows in its own task, which may read the client's last
    # bytes (its ping) after the client has given up: wait for it, with a generous deadline
    async with asyncio.timeout(30):
        while proxy.stats.dropped_bytes == 0:
            await asyncio.sleep(0.05)
