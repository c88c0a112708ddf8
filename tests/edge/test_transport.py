"""The MQTT link: backoff, options from the config, and behaviour when the broker goes away."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import ssl
import time
from pathlib import Path

import aiomqtt
import pytest
from asset_tracker_edge.config import ConfigError, validate
from asset_tracker_edge.transport import (
    Backoff,
    LinkDown,
    LinkOptions,
    LinkOwner,
    MqttLink,
    TlsOptions,
    Will,
    tls_context,
)
from mosquitto_broker import Mosquitto


def test_backoff_is_jittered_exponential_and_capped() -> None:
    clock = [0.0]
    backoff = Backoff(0.2, 5.0, random.Random(7), clock=lambda: clock[0])
    delays = []
    for _ in range(12):
        delays.append(backoff.next_delay())
        clock[0] += 40.0  # an old outage: the full exponential ceiling applies
    ceilings = [min(5.0, 0.2 * 2**i) for i in range(12)]
    assert all(0.2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[6:]) > 2.0  # it grows past the young outage's ceiling
    assert len(set(delays)) == len(delays)  # and is jittered
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.2)


def test_backoff_stays_short_while_an_outage_is_young() -> None:
    """A broker restart takes seconds: a node must not sit out a grown delay after it is back."""
    clock = [0.0]
    backoff = Backoff(0.2, 30.0, random.Random(3), clock=lambda: clock[0])
    young = []
    while clock[0] < 29.0:
        young.append(backoff.next_delay())
        clock[0] += young[-1]
    assert len(young) > 10
    assert max(young) <= 2.0
    clock[0] = 31.0
    later = [backoff.next_delay() for _ in range(20)]
    assert max(later) > 2.0  # past 30 s the ceiling grows again, sparing a broker that stays down
    backoff.reset()
    clock[0] = 100.0
    assert backoff.next_delay() == pytest.approx(0.2)


def test_options_from_config() -> None:
    opts = LinkOptions.from_config(
        {"host": "broker", "username": "edge", "password": "pw", "tls": {"enabled": True}},
        "asset-tracker-edge-garage",
        24,
    )
    assert (opts.host, opts.port, opts.username, opts.max_inflight) == ("broker", 8883, "edge", 24)
    assert "pw" not in repr(opts)  # no secret in a repr that might be logged
    plain = LinkOptions.from_config({"host": "b"}, "x", 8)
    assert plain.port == 1883 and plain.tls.enabled is False
    assert plain.servers == (("b", 1883),)
    cluster = LinkOptions.from_config(
        {"host": "a", "fallbacks": [{"host": "b"}, {"host": "c", "port": 1884}]}, "x", 8
    )
    assert cluster.servers == (("a", 1883), ("b", 1883), ("c", 1884))


def test_fallbacks_in_the_config() -> None:
    base = {"node": {"id": "garage"}}
    ok = validate({**base, "mqtt": {"host": "a", "fallbacks": [{"host": "b", "port": 1884}]}})
    assert ok["mqtt"]["fallbacks"] == [{"host": "b", "port": 1884}]
    assert validate(base)["mqtt"]["fallbacks"] == []
    with pytest.raises(ConfigError):
        validate({**base, "mqtt": {"fallbacks": [{"port": 1884}]}})


def test_tls_context() -> None:
    assert tls_context(TlsOptions(enabled=False)) is None
    strict = tls_context(TlsOptions(enabled=True))
    assert strict is not None and strict.verify_mode == ssl.CERT_REQUIRED
    assert strict.check_hostname is True
    lax = tls_context(TlsOptions(enabled=True, insecure=True))
    assert lax is not None and lax.verify_mode == ssl.CERT_NONE
    with pytest.raises(OSError):
        tls_context(TlsOptions(enabled=True, cert_file="/nonexistent.pem"))


class Owner(LinkOwner):
    def __init__(self) -> None:
        self.connected = 0
        self.ready = asyncio.Event()
        self.down = 0
        self.messages: list[tuple[str, bytes, bool]] = []

    async def on_connected(self, link: MqttLink) -> None:
        self.connected += 1

    def on_ready(self) -> None:
        self.ready.set()

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        self.messages.append((topic, payload, retained))

    def on_disconnected(self) -> None:
        self.down += 1
        self.ready.clear()


class RefusingClient:
    """A client whose handshake is refused in the very turn its task is cancelled, the way
    aiomqtt's `asyncio.wait_for` on Python 3.11 answers it: the refusal is raised and the
    cancellation only counted on the task."""

    handshakes = 0

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        pass

    async def __aenter__(self) -> RefusingClient:
        RefusingClient.handshakes += 1
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)
        raise aiomqtt.MqttCodeError(135, "Not authorized")

    async def __aexit__(self, *_exc: object) -> None:
        return None


async def test_a_cancellation_that_comes_with_a_refused_handshake_ends_the_link() -> None:
    link = MqttLink(
        LinkOptions(backoff_min_s=0.05, backoff_max_s=0.05),
        Will("t/status", b"offline"),
        [],
        Owner(),
        client_factory=RefusingClient,  # type: ignore[arg-type]
    )
    task = asyncio.create_task(link.run())
    deadline = time.monotonic() + 30
    while not task.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    done = task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # before: the link slept and tried again, forever, with nothing left to cancel it
    assert done and RefusingClient.handshakes == 1
    assert link.last_error is not None and "135" in link.last_error


@contextlib.asynccontextmanager
async def link_to(broker: Mosquitto):
    owner = Owner()
    link = MqttLink(
        LinkOptions(
            host=broker.host,
            port=broker.port,
            client_id="t-link",
            keepalive_s=2,
            backoff_min_s=0.05,
            backoff_max_s=0.2,
        ),
        Will("t/status", b"offline"),
        ["t/in"],
        owner,
    )
    task = asyncio.create_task(link.run())
    try:
        yield link, owner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_publish_fails_fast_when_the_session_dies_before_puback(
    mosquitto: Mosquitto,
) -> None:
    async with link_to(mosquitto) as (link, owner):
        await asyncio.wait_for(owner.ready.wait(), 10)
        await link.publish("t/x", b"1")
        assert link.publish_latency_ms > 0
        assert mosquitto._proc is not None
        os.kill(mosquitto._proc.pid, signal.SIGSTOP)  # PUBACK will never come
        pending = asyncio.ensure_future(link.publish("t/x", b"2"))
        await asyncio.sleep(0.2)
        assert not pending.done()
        started = time.monotonic()
        os.kill(mosquitto._proc.pid, signal.SIGKILL)
        mosquitto._proc.wait()
        mosquitto._proc = None
        with pytest.raises(LinkDown):
            await asyncio.wait_for(pending, 5)
        assert time.monotonic() - started < 5
        assert not link.connected
        with pytest.raises(LinkDown):
            await link.publish("t/x", b"3")
        # and it comes back by itself once the broker is there again
        mosquitto.start()
        await asyncio.wait_for(owner.ready.wait(), 10)
        assert link.reconnects == 1 and owner.connected == 2 and owner.down == 1


async def test_messages_carry_the_retained_flag(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with link_to(mosquitto) as (link, owner):
        await asyncio.wait_for(owner.ready.wait(), 10)
        await link.publish("t/in", b"kept", retain=True)
        await link.publish("t/in", b"live")
        deadline = time.monotonic() + 5
        while len(owner.messages) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    async with link_to(mosquitto) as (link, owner):
        await asyncio.wait_for(owner.ready.wait(), 10)
        deadline = time.monotonic() + 5
        while not owner.messages:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert owner.messages[0] == ("t/in", b"kept", True)


async def test_a_dead_broker_is_left_for_the_next_of_its_cluster(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """With fallbacks, a session that fails or ends moves on to the next broker in turn."""
    dead = Mosquitto(tmp_path / "dead")  # never started: its port refuses
    owner = Owner()
    link = MqttLink(
        LinkOptions(
            host=dead.host,
            port=dead.port,
            client_id="t-failover",
            keepalive_s=2,
            backoff_min_s=0.05,
            backoff_max_s=0.2,
            fallbacks=((mosquitto.host, mosquitto.port),),
        ),
        Will("t/status", b"offline"),
        ["t/in"],
        owner,
    )
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(owner.ready.wait(), 10)
        assert link.server == (mosquitto.host, mosquitto.port)
        # this one goes away and the other comes up: the link follows
        dead.start()
        try:
            mosquitto.stop()
            deadline = time.monotonic() + 10
            while link.server != (dead.host, dead.port) or not owner.ready.is_set():
                assert time.monotonic() < deadline, "the link did not move to the live broker"
                await asyncio.sleep(0.02)
            await link.publish("t/in", b"via the other one")
        finally:
            dead.stop()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
