"""The MQTT link on aiomqtt: TLS and credentials, last will, reconnect with jittered backoff.

`MqttLink.run()` keeps one session alive forever. Each session connects with the node's last will,
lets the owner publish its birth (`on_connected`), subscribes, and hands every incoming message to
the owner. Publishing raises `LinkDown` as soon as the session ends, instead of waiting for a PUBACK
that can no longer arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from .config import tls_file_problem

_LOGGER = logging.getLogger(__name__)


class LinkDown(Exception):
    """No session, or the session ended before the broker confirmed the publish."""


@dataclass(slots=True)
class TlsOptions:
    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


CONNECT_TIMEOUT_S = 5.0
# Subscriptions are QoS 0 (publications stay QoS 1). A clean session keeps nothing across a
# disconnect, so a QoS 1 subscription adds no guarantee that the outbox and the ack watermark do
# not give end to end; and on a clustered broker it can take one away: RabbitMQ keeps a QoS 1
# subscription of a clean session in a queue on the node the client is connected to, and when
# that node dies every QoS 1 PUBLISH routed to the topic waits for a PUBACK that comes only when
# the node is back, stalling the publisher on every other node (PROTOCOL.md, broker requirements).
SUBSCRIBE_QOS = 0
YOUNG_OUTAGE_S = 30.0
YOUNG_OUTAGE_MAX_DELAY_S = 2.0


@dataclass(slots=True)
class LinkOptions:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive_s: int = 30
    client_id: str = "asset-tracker-edge"
    tls: TlsOptions = field(default_factory=TlsOptions)
    # paho's own window of unacknowledged QoS 1 messages
    max_inflight: int = 32
    publish_timeout_s: float = 10.0
    backoff_min_s: float = 0.2
    backoff_max_s: float = 30.0
    # more brokers of one cluster, tried in turn after `host`:`port` when a session ends or fails
    # (a clustered broker: a node's death must not keep the edge away until it is back)
    fallbacks: tuple[tuple[str, int], ...] = ()

    @property
    def servers(self) -> tuple[tuple[str, int], ...]:
        return ((self.host, self.port), *self.fallbacks)

    @classmethod
    def from_config(cls, mqtt: dict[str, Any], client_id: str, max_inflight: int) -> LinkOptions:
        tls = mqtt.get("tls") or {}
        tls_opts = TlsOptions(
            enabled=bool(tls.get("enabled", False)),
            ca_file=tls.get("ca_file"),
            cert_file=tls.get("cert_file"),
            key_file=tls.get("key_file"),
            insecure=bool(tls.get("insecure", False)),
        )
        default_port = 8883 if tls_opts.enabled else 1883
        fallbacks = tuple(
            (str(server.get("host", "127.0.0.1")), int(server.get("port") or default_port))
            for server in mqtt.get("fallbacks") or ()
        )
        return cls(
            host=str(mqtt.get("host", "127.0.0.1")),
            port=int(mqtt.get("port") or default_port),
            username=mqtt.get("username"),
            password=mqtt.get("password"),
            keepalive_s=int(mqtt.get("keepalive_s", 30)),
            client_id=client_id,
            tls=tls_opts,
            max_inflight=max_inflight,
            backoff_min_s=float(mqtt.get("reconnect_min_s", 0.2)),
            backoff_max_s=float(mqtt.get("reconnect_max_s", 30.0)),
            fallbacks=fallbacks,
        )


class TlsFileError(OSError):
    """A TLS file that cannot be used, said as which one and how to fix it (OpenSSL says only
    "[Errno 2] No such file or directory"); an OSError as before, so callers catch it alike."""


def tls_context(tls: TlsOptions) -> ssl.SSLContext | None:
    """Server verification against `ca_file` (or the system store); a client cert for mutual TLS."""
    if not tls.enabled:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except OSError as err:  # ssl.SSLError included: a file that is no certificate
        raise TlsFileError(tls_file_problem("ca_file", str(tls.ca_file), err)) from err
    if tls.cert_file:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except OSError as err:
            key = "key_file" if tls.key_file and not _readable(tls.key_file) else "cert_file"
            path = tls.key_file if key == "key_file" else tls.cert_file
            raise TlsFileError(tls_file_problem(key, str(path), err)) from err
    if tls.insecure:
        # explicit opt-in for self-signed brokers reached by IP; never the default
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


class Backoff:
    """Exponential backoff with full jitter, so a fleet does not reconnect in lock-step.

    While an outage is young the delay stays short: most outages are a broker restarting, and a
    refused connection costs the broker next to nothing, whereas a delay grown to its ceiling
    keeps the node away for that long after the broker is back.
    """

    def __init__(
        self,
        minimum: float,
        maximum: float,
        rng: random.Random | None = None,
        *,
        young_s: float = YOUNG_OUTAGE_S,
        young_max_s: float = YOUNG_OUTAGE_MAX_DELAY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()
        self._young_s = young_s
        self._young_max_s = young_max_s
        self._clock = clock
        self._since: float | None = None

    def next_delay(self) -> float:
        now = self._clock()
        if self._since is None:
            self._since = now
        ceiling = min(self.maximum, self.minimum * (2**self.attempt))
        if now - self._since < self._young_s:
            ceiling = min(ceiling, self._young_max_s)
        self.attempt = min(self.attempt + 1, 32)
        return self._rng.uniform(self.minimum, max(self.minimum, ceiling))

    def reset(self) -> None:
        self.attempt = 0
        self._since = None


@dataclass(slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class LinkOwner:
    """What the link calls back into (the node)."""

    async def on_connected(self, link: MqttLink) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def on_ready(self) -> None:  # pragma: no cover - interface
        """Subscriptions are in place."""
        raise NotImplementedError

    def on_message(  # pragma: no cover - interface
        self, topic: str, payload: bytes, retained: bool
    ) -> None:
        """`retained` is true for a retained message replayed at subscribe time."""
        raise NotImplementedError

    def on_disconnected(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class MqttLink:
    """One broker session at a time, reconnecting forever."""

    def __init__(
        self,
        options: LinkOptions,
        will: Will,
        subscriptions: list[str],
        owner: LinkOwner,
        *,
        client_factory: Callable[..., aiomqtt.Client] = aiomqtt.Client,
    ) -> None:
        self.options = options
        self.will = will
        self.subscriptions = subscriptions
        self.owner = owner
        self._client_factory = client_factory
        self._client: aiomqtt.Client | None = None
        self._closed: asyncio.Future[None] | None = None
        self.backoff = Backoff(options.backoff_min_s, options.backoff_max_s)
        self.connects = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.publish_latency_ms = 0.0
        self.inflight = 0
        self.published = 0
        self.published_bytes = 0
        self.server_index = 0

    @property
    def server(self) -> tuple[str, int]:
        """The broker this session goes to (or the last one did)."""
        servers = self.options.servers
        return servers[self.server_index % len(servers)]

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def run(self) -> None:
        """Runs sessions until cancelled; broker outages never escape as exceptions."""
        while True:
            try:
                await self._session()
            except (aiomqtt.MqttError, OSError, ssl.SSLError, ValueError) as err:
                self._note_error(err)
            # a cancellation that came with the failed handshake was not raised (Python 3.11)
            _raise_if_cancelled()
            if len(self.options.servers) > 1:
                # the next node of the cluster: the one that ended this session may be gone
                self.server_index = (self.server_index + 1) % len(self.options.servers)
            delay = self.backoff.next_delay()
            _LOGGER.debug("reconnecting in %.2f s", delay)
            await asyncio.sleep(delay)

    def _note_error(self, err: BaseException) -> None:
        text = str(err) or type(err).__name__
        if text != self.last_error:
            _LOGGER.warning("MQTT link to %s:%d: %s", *self.server, text)
        self.last_error = text

    def _make_client(self) -> aiomqtt.Client:
        opts = self.options
        host, port = self.server
        return self._client_factory(
            host,
            port,
            username=opts.username,
            password=opts.password,
            identifier=opts.client_id,
            will=aiomqtt.Will(self.will.topic, self.will.payload, self.will.qos, self.will.retain),
            clean_session=True,
            keepalive=opts.keepalive_s,
            # the wait for CONNACK: aiomqtt ignores a disconnect before it, so a handshake the
            # broker drops (a restart, a missed keepalive) costs this whole timeout
            timeout=CONNECT_TIMEOUT_S,
            max_inflight_messages=opts.max_inflight,
            tls_context=tls_context(opts.tls),
            # small QoS 1 messages and their acks ping-pong; Nagle would hold each one ~40 ms
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _session(self) -> None:
        client = self._make_client()
        async with client:
            _raise_if_cancelled()
            self._client = client
            self._closed = asyncio.get_running_loop().create_future()
            self.connects += 1
            if self.connects > 1:
                self.reconnects += 1
            self.last_error = None
            _LOGGER.info("MQTT connected to %s:%d", *self.server)
            try:
                await self.owner.on_connected(self)
                for topic in self.subscriptions:
                    await client.subscribe(
                        topic, qos=SUBSCRIBE_QOS, timeout=self.options.publish_timeout_s
                    )
                    _raise_if_cancelled()
                self.backoff.reset()
                self.owner.on_ready()
                async for message in client.messages:
                    payload = message.payload
                    if not isinstance(payload, bytes | bytearray):
                        payload = b"" if payload is None else str(payload).encode()
                    self.owner.on_message(str(message.topic), bytes(payload), message.retain)
            finally:
                self._end_session()

    def _end_session(self) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._client = None
        self._closed = None
        self.owner.on_disconnected()

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publishes and, for QoS 1, waits for the broker's PUBACK; raises LinkDown otherwise."""
        client, closed = self._client, self._closed
        if client is None or closed is None:
            raise LinkDown("not connected")
        started = time.perf_counter()
        self.inflight += 1
        task = asyncio.ensure_future(
            client.publish(
                topic, payload, qos=qos, retain=retain, timeout=self.options.publish_timeout_s
            )
        )
        try:
            done, _ = await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
            if task not in done:
                task.cancel()
                raise LinkDown("session ended before PUBACK")
            try:
                task.result()
            except aiomqtt.MqttError as err:
                raise LinkDown(str(err)) from err
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self.inflight -= 1
        self.published += 1
        self.published_bytes += len(payload)
        if qos > 0:
            latency = (time.perf_counter() - started) * 1000
            # exponentially weighted, so one slow PUBACK does not dominate the health metric
            self.publish_latency_ms += 0.2 * (latency - self.publish_latency_ms)

    async def publish_final(self, topic: str, payload: bytes) -> None:
        """Best effort before an orderly shutdown (the broker sends no will after a DISCONNECT)."""
        if self._client is None:
            return
        with contextlib.suppress(LinkDown, TimeoutError):
            async with asyncio.timeout(2.0):
                await self.publish(topic, payload, qos=1, retain=True)

    def health(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "publish_latency_ms": round(self.publish_latency_ms, 3),
            "inflight": self.inflight,
            "reconnects": self.reconnects,
        }


def _raise_if_cancelled() -> None:
    """aiomqtt waits with `asyncio.wait_for`, which on Python 3.11 returns the result instead of
    raising when a cancellation arrives in the same loop turn as it; the cancellation is still
    counted on the task, so it is raised here (a no-op on 3.12 and later, which raise it)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
