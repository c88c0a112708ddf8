"""`EdgeNode`: the delivery core. Stamps and stores events, lets the scheduler batch them onto the
MQTT link, and reacts to what the integration says (ack watermark, commands, host status).

Only the integration's acknowledgement deletes events; a broker PUBACK only frees an in-flight slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from . import __version__, protocol
from .assets import AssetList, Outcome
from .durable_file import next_boot
from .events import EdgeEvent
from .hlc import HybridClock, Timestamp
from .outbox import Closure, Outbox, OutboxOptions
from .runs import Owners
from .scheduler import Batch, BatchPolicy, DeliveryScheduler, SchedulerOptions
from .transport import LinkDown, LinkOptions, LinkOwner, MqttLink, Will

_LOGGER = logging.getLogger(__name__)

CAPS = ["ble", "anomaly", "cmd", "assets"]
HEALTH_INTERVAL_S = 10.0
# tags heard that are no asset: at most one report this often (PROTOCOL.md "heard")
HEARD_INTERVAL_S = 10.0
# A retained host `offline` seen at subscribe time, with nothing live after it for this long, is
# not trusted to hold the events: a clustered broker (RabbitMQ) keeps retained messages per node,
# so the node this session is on may still hold an `offline` the integration published through it
# before it moved to another node (PROTOCOL.md, broker requirements)
STALE_OFFLINE_S = 3.0
# an orderly stop sends what is committed (and awaits its PUBACKs) for at most this long
GOODBYE_DRAIN_S = 5.0
# routine events wait for their commit at most this long (see EdgeNode._routine_commit_ms)
ROUTINE_COMMIT_MAX_MS = 1000
# health changes of interest are published at most this often
HEALTH_MIN_INTERVAL_S = 1.0


class RuntimeSettingsLike(Protocol):
    """The part of `settings.RuntimeSettings` the delivery core uses."""

    version: int

    def values(self) -> dict[str, Any]: ...

    def get(self, key: str) -> Any: ...

    def apply(self, changes: dict[str, Any], version: int | None) -> dict[str, str]: ...

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]: ...


class EdgeNode(LinkOwner):
    """One edge node's delivery core; see DESIGN.md for the interface."""

    def __init__(self, config: dict[str, Any], settings: RuntimeSettingsLike) -> None:
        self.config = config
        self.settings = settings
        node = config["node"]
        self.node_id: str = node["id"]
        self.name: str = node.get("name") or self.node_id
        self.area: str | None = node.get("area")
        mqtt = config.get("mqtt", {})
        self.root: str = mqtt.get("root_topic", "asset_tracker")
        storage = config.get("storage", {})
        self.data_dir = Path(storage.get("path", "/data"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.boot = next_boot(self.data_dir / "boot.json")
        # Home Assistant's asset list as last applied, merged with the YAML assets
        self.assets = AssetList(config.get("assets", []), self.data_dir / "assets.json")
        self.clock = HybridClock(
            self.data_dir / "clock.json",
            max_offset_ms=int(config.get("clock", {}).get("max_offset_ms", 60_000)),
        )
        self.outbox = Outbox(
            self.data_dir / "outbox.db",
            OutboxOptions(
                max_bytes=int(storage.get("outbox_max_bytes", 64 * 1024 * 1024)),
                max_events=int(storage.get("outbox_max_events", 1_000_000)),
                commit_window_ms=int(storage.get("commit_window_ms", 50)),
                sync=str(storage.get("sync", "normal")),
            ),
        )
        batching = config.get("batching", {})
        max_inflight = int(batching.get("max_inflight", 20))
        self.link = MqttLink(
            LinkOptions.from_config(mqtt, f"asset-tracker-edge-{self.node_id}", max_inflight + 12),
            Will(self.topic("status"), self._status_payload("offline")),
            [
                self.topic("ack"),
                self.topic("cmd"),
                self.topic("assets"),
                self.topic("status"),
                self.host_topic,
            ],
            self,
        )
        self.scheduler = DeliveryScheduler(
            self.outbox,
            self._send_batch,
            BatchPolicy(
                lambda: int(self._setting("batching.window_ms", batching.get("window_ms", 1000))),
                lambda: int(self._setting("batching.max_events", batching.get("max_events", 200))),
                lambda: self.link.publish_latency_ms,
            ),
            SchedulerOptions(
                max_inflight=max_inflight,
                max_unacked=int(batching.get("max_unacked", 4_000)),
                ack_timeout_s=float(batching.get("ack_timeout_s", 10.0)),
                replay_rate=float(batching.get("replay_rate", 30_000)),
            ),
        )
        self._snapshot_provider: Callable[[], list[dict[str, Any]]] | None = None
        self._heard_provider: Callable[[], list[dict[str, Any]] | None] | None = None
        self._announcement_provider: Callable[[], dict[str, Any]] | None = None
        self._health_providers: dict[str, Callable[[], dict[str, Any]]] = {}
        self.host_online: bool | None = None
        # host statuses seen, and retained `offline`s that nothing live followed (possibly stale)
        self._host_statuses = 0
        self.stale_host_offline = 0
        # the HLC and session of the newest host status taken; an older one is stale (a will
        # published late), unless it is the will of that same session
        self._host_hlc: Timestamp | None = None
        self._host_session: str | None = None
        self.stale_host_statuses = 0
        self.rejected: dict[str, int] = {
            "bad_ack": 0,
            "bad_cmd": 0,
            "bad_host_status": 0,
            "bad_assets": 0,
        }
        self.rejected_events = 0
        self._logged_rejections: set[tuple[str, str]] = set()
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._started_at = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self._health_dirty: asyncio.Event | None = None
        self._health_marks: tuple[int, ...] = ()
        self._last_rebirth = 0.0
        self._stop_requested = asyncio.Event()
        self._stopping = False
        self._unsubscribe_settings = settings.subscribe(self._on_settings_changed)
        self.outbox.options.routine_window_ms = self._routine_commit_ms()
        self.outbox.add_state_listener(self._check_interest)
        self.outbox.add_listener(lambda _info: self._check_interest())

    # topics ------------------------------------------------------------------------------------

    def topic(self, kind: str) -> str:
        return f"{self.root}/{self.node_id}/{kind}"

    @property
    def host_topic(self) -> str:
        return f"{self.root}/host/status"

    # public interface --------------------------------------------------------------------------

    def set_snapshot_provider(self, provider: Callable[[], list[dict[str, Any]]]) -> None:
        self._snapshot_provider = provider

    def set_heard_provider(self, provider: Callable[[], list[dict[str, Any]] | None]) -> None:
        """Tags heard that are no asset; the provider returns None while reporting is off."""
        self._heard_provider = provider

    def set_announcement_provider(self, provider: Callable[[], dict[str, Any]]) -> None:
        self._announcement_provider = provider

    def add_health_provider(self, section: str, provider: Callable[[], dict[str, Any]]) -> None:
        self._health_providers[section] = provider

    async def open(self) -> None:
        """Opens the outbox (idempotent); `emit` and `run` call it."""
        async with self._open_lock:
            if self._opened:
                return
            await self.outbox.open()
            if self.outbox.newest_hlc is not None:
                # never stamp below what is already stored, whatever the clock file says
                self.clock.observe(self.outbox.newest_hlc)
            if self.outbox.recovery is not None:
                self._mark_health()
            self._opened = True

    async def emit(self, event: EdgeEvent) -> None:
        """Appends durably (within the commit window); awaits above the outbox high watermark."""
        if not self._opened:
            await self.open()
        await self.outbox.wait_writable()
        body: dict[str, Any] = {"kind": event.kind, "asset": event.asset, "data": event.data}
        if event.obs_ms is not None:
            body["obs_ms"] = event.obs_ms
        # no await between stamping and appending: seq order is HLC order
        stamp = self.clock.now()
        try:
            self.outbox.append(body, event.priority, stamp)
        except (ValueError, TypeError) as err:
            self.rejected_events += 1
            self._log_rejection("event", type(err).__name__, f"{event.kind}: {err}")

    async def flush(self) -> None:
        """Waits until every emitted event is committed."""
        await self.outbox.flush()

    async def run(self) -> None:
        """Runs until cancelled; reconnects forever; never raises on a broker outage."""
        await self.open()
        self._health_dirty = asyncio.Event()
        tasks = [
            asyncio.create_task(self.link.run(), name="edge-link"),
            asyncio.create_task(self.scheduler.run(), name="edge-scheduler"),
            asyncio.create_task(self._health_loop(), name="edge-health"),
            asyncio.create_task(self._heard_loop(), name="edge-heard"),
        ]
        stopper = asyncio.create_task(self._stop_requested.wait(), name="edge-stop")
        graceful = False
        try:
            # asyncio.wait, not gather: cancelling run() must leave the link up for the goodbye
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            graceful = stopper in done
        finally:
            stopper.cancel()
            await self._shutdown(tasks, graceful=graceful)

    def request_stop(self) -> None:
        """An orderly stop: what is committed goes out first, then the goodbye (see `run`)."""
        self._stop_requested.set()

    async def _shutdown(self, tasks: list[asyncio.Task[None]], *, graceful: bool) -> None:
        # our own `offline` comes back to us on the status subscription: no rebirth for it
        self._stopping = True
        if graceful:
            # events still in the commit or batch window leave now instead of at the next start
            with contextlib.suppress(Exception):
                async with asyncio.timeout(GOODBYE_DRAIN_S):
                    await self.outbox.flush()
                    await self.scheduler.drain()
        self.scheduler.stop()
        with contextlib.suppress(Exception):
            # the retained health is what a dashboard shows while the node is away: the last word
            await self.link.publish_final(
                self.topic("health"), protocol.encode("health", self.health())
            )
        with contextlib.suppress(Exception):
            await self.link.publish_final(self.topic("status"), self._status_payload("offline"))
        for task in [*tasks, *self._tasks]:
            task.cancel()
        for task in [*tasks, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._unsubscribe_settings()
        await self.outbox.close()

    # link callbacks ----------------------------------------------------------------------------

    async def on_connected(self, link: MqttLink) -> None:
        self.host_online = None
        await self._publish_birth()
        await self._publish_config()
        self._mark_health()

    def on_ready(self) -> None:
        self.scheduler.start()

    def on_disconnected(self) -> None:
        self.scheduler.stop()
        self._mark_health()

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            decoded = protocol.decode(self.root, topic, payload)
        except protocol.UnknownTopic:
            return  # a sub-topic this version does not define: ignored, not an error
        except protocol.ProtocolError as err:
            self._reject(topic, err.reason, err.detail)
            if topic == self.topic("assets"):
                self._spawn(self._refuse_assets(payload, err))
            return
        kind = decoded.kind
        message = decoded.message
        if kind == "ack":
            self._on_ack(message)
        elif kind == "cmd":
            self._spawn(self._on_cmd(message))
        elif kind == "assets":
            self._spawn(self._on_assets(message))
        elif kind == "host/status":
            self._on_host_status(message, live=not retained)
        elif kind == "status":
            self._on_own_status(message)

    # integration messages ----------------------------------------------------------------------

    def _counter_for(self, topic: str) -> str:
        if topic == self.host_topic:
            return "bad_host_status"
        if topic.endswith("/cmd"):
            return "bad_cmd"
        if topic.endswith("/assets"):
            return "bad_assets"
        return "bad_ack"

    def _reject(self, topic: str, reason: str, detail: str) -> None:
        if topic == self.topic("status"):
            return  # our own retained status; not an integration message
        counter = self._counter_for(topic)
        self.rejected[counter] += 1
        self._log_rejection(counter, reason, f"{topic}: {detail}")
        self._mark_health()

    def _log_rejection(self, what: str, reason: str, detail: str) -> None:
        key = (what, reason)
        level = logging.DEBUG if key in self._logged_rejections else logging.WARNING
        self._logged_rejections.add(key)
        _LOGGER.log(level, "rejected %s (%s): %s", what, reason, detail)

    def _merge(self, message: dict[str, Any]) -> None:
        hlc = message.get("hlc")
        if hlc is None:
            return
        rejected_before = self.clock.rejected
        self.clock.receive(Timestamp.from_wire(hlc))
        if self.clock.rejected != rejected_before:
            self._mark_health()

    def _on_ack(self, message: dict[str, Any]) -> None:
        self._merge(message)
        epoch, seq = int(message["epoch"]), int(message["seq"])
        raw_owners = message.get("owners")
        owners = Owners(raw_owners) if raw_owners is not None else None
        if message.get("closed"):
            closure = Closure(seq, frozenset(message.get("above") or ()), owners or Owners(()))
            self._spawn(self._rotate(epoch, closure))
        elif self.outbox.ack(epoch, seq, owners):
            self.scheduler.on_ack()

    async def _rotate(self, epoch: int, closure: Closure) -> None:
        if await self.outbox.rotate(epoch, closure) is not None:
            # every batch picked under the closed epoch is dropped; replay from the new one
            self.scheduler.rewind()
            self._mark_health()

    def _on_host_status(self, message: dict[str, Any], *, live: bool) -> None:
        online = message.get("state") == "online"
        hlc = message.get("hlc")
        stamp = Timestamp.from_wire(hlc) if hlc is not None else None
        if self._stale_host_status(stamp, message.get("session")):
            # older than a status already taken: on a cluster, the will of a session whose node
            # was cut off is published when the node comes back, after the birth of the
            # integration's next session on another node (PROTOCOL.md, host status)
            self.stale_host_statuses += 1
            _LOGGER.info("ignored a stale integration status: %s, older than one taken", online)
            return
        rejected_before = self.clock.rejected
        self._merge(message)
        newer = self._host_hlc is None or (stamp is not None and stamp > self._host_hlc)
        if stamp is not None and newer and self.clock.rejected == rejected_before:
            self._host_hlc = stamp
            self._host_session = message.get("session")
        previous = self.host_online
        self.host_online = online
        self._host_statuses += 1
        if not online:
            if previous is not False:
                _LOGGER.info("integration offline: holding events in the outbox")
            self.scheduler.stop()
            if not live:
                self._spawn(self._doubt_retained_offline(self._host_statuses))
            return
        # a live (not retained) "online" is a fresh host session that missed what we sent while
        # it was away; the retained one seen at subscribe time follows our own fresh start
        if previous is not True or live:
            _LOGGER.info("integration online: rebirth and replay from the ack watermark")
            self._spawn(self._rebirth(snapshot=True))
            if previous is False or live or not self.scheduler.active:
                self.scheduler.start()

    def _stale_host_status(self, stamp: Timestamp | None, session: str | None) -> bool:
        """Older than the newest status taken and not that session's own will: a will is set
        before its session's birth, so it is always older than the birth it follows."""
        if stamp is None or self._host_hlc is None or stamp >= self._host_hlc:
            return False
        return session is None or session != self._host_session

    async def _doubt_retained_offline(self, seen: int) -> None:
        """Sends again when a retained `offline` is all there is after STALE_OFFLINE_S: acks from
        a live integration then prove it wrong, and if it was right the events wait in the outbox
        as they would have (re-sent only as the ack timeout allows)."""
        await asyncio.sleep(STALE_OFFLINE_S)
        if self._host_statuses != seen or self.host_online is not False or not self.link.connected:
            return
        self.stale_host_offline += 1
        _LOGGER.warning(
            "the broker's retained integration status says offline and nothing live followed in "
            "%.0f s; a clustered broker keeps retained messages per node, so it may be stale: "
            "sending until an ack or a live status says otherwise",
            STALE_OFFLINE_S,
        )
        self.host_online = None
        self.scheduler.start()
        self._mark_health()

    def _on_own_status(self, message: dict[str, Any]) -> None:
        # a will from an earlier session (takeover after a crash) can overwrite our retained birth
        if self._stopping or (
            message.get("state") == "online" and message.get("boot") == self.boot
        ):
            return
        if time.monotonic() - self._last_rebirth < 1.0:
            return
        self._spawn(self._publish_birth())

    async def _on_cmd(self, message: dict[str, Any]) -> None:
        self._merge(message)
        op = message.get("op")
        ok, errors = True, {}
        if op == "set":
            version = message.get("version")
            if version is not None and int(version) <= self.settings.version:
                _LOGGER.info(
                    "cmd %s: settings version %s is not newer; unchanged",
                    message.get("id"),
                    version,
                )
            else:
                errors = self.settings.apply(dict(message.get("set") or {}), version)
                ok = not errors
        elif op == "rebirth":
            await self._rebirth(snapshot=True)
        elif op == "snapshot":
            await self._publish_snapshot()
        else:
            ok, errors = False, {"op": f"unknown op {op!r}"}
        result = {
            "v": 1,
            "node": self.node_id,
            "id": message.get("id"),
            "ok": ok,
            "settings_version": self.settings.version,
            "errors": errors,
            "settings": self.settings.values(),
            "hlc": self.clock.now().to_wire(),
        }
        await self._publish("cmd/result", result, retain=True)

    async def _on_assets(self, message: dict[str, Any]) -> None:
        """One part of Home Assistant's asset list; answered once the list is whole."""
        self._merge(message)
        before = self.assets.version
        outcome = self.assets.receive(message)
        if outcome is None:
            return  # more parts to come
        if not outcome.ok:
            self.rejected["bad_assets"] += 1
            self._mark_health()
        await self._publish_assets_result(message["id"], message["version"], outcome)
        if self.assets.version != before:
            await self._publish_config()

    async def _refuse_assets(self, payload: bytes, err: protocol.ProtocolError) -> None:
        """A part the codec refused rejects its whole list; answered when it names one."""
        try:
            raw = json.loads(payload)
            command_id, version = raw["id"], raw["version"]
        except (ValueError, TypeError, KeyError):
            return  # nothing to answer to: the counter and the log line say it
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            version = 0
        outcome = self.assets.reject(version, [f"{err.reason}: {err.detail}"])
        if not protocol.is_command_id(command_id):
            return
        await self._publish_assets_result(command_id, version, outcome)

    async def _publish_assets_result(self, command_id: str, version: int, outcome: Outcome) -> None:
        result = {
            "v": 1,
            "node": self.node_id,
            "id": command_id,
            "ok": outcome.ok,
            "version": min(version, protocol.MAX_SAFE_INT),
            "applied": self.assets.version,
            "count": len(self.assets.effective()),
            "shadowed": self.assets.shadowed(),
            "errors": [e[:256] for e in outcome.errors],
            "hlc": self.clock.now().to_wire(),
        }
        await self._publish("assets/result", result, retain=True)

    def _routine_commit_ms(self) -> int:
        """How long routine events wait for their commit: the batch window (they are not sent
        before it ends), at most 1 s (what a crash may lose of them, unsent), at least the
        commit window."""
        batching = self.config.get("batching", {})
        window = int(self._setting("batching.window_ms", batching.get("window_ms", 1000)))
        return max(self.outbox.options.commit_window_ms, min(window, ROUTINE_COMMIT_MAX_MS))

    def _on_settings_changed(self, _values: dict[str, Any]) -> None:
        self.outbox.options.routine_window_ms = self._routine_commit_ms()
        self.scheduler.wake()
        if self.link.connected:
            self._spawn(self._publish_config())

    # publishing --------------------------------------------------------------------------------

    def _status_payload(self, state: str) -> bytes:
        if state == "offline":
            body: dict[str, Any] = {
                "v": 1,
                "node": self.node_id,
                "state": "offline",
                "boot": self.boot,
            }
        else:
            body = {
                "v": 1,
                "node": self.node_id,
                "state": "online",
                "boot": self.boot,
                "epoch": self.outbox.epoch,
                "sw": __version__,
                "caps": CAPS,
                "hlc": self.clock.now().to_wire(),
            }
        return protocol.encode("status", body)

    async def _publish(
        self, kind: str, body: dict[str, Any], *, retain: bool, qos: int = 1
    ) -> None:
        try:
            payload = protocol.encode(kind, body)
        except protocol.ProtocolError:
            # our own message failed the codec (e.g. a provider returned something invalid)
            _LOGGER.exception("%s message not published", kind)
            return
        try:
            await self.link.publish(self.topic(kind), payload, qos=qos, retain=retain)
        except LinkDown as err:
            _LOGGER.debug("%s not published: %s", kind, err)

    async def _publish_birth(self) -> None:
        self._last_rebirth = time.monotonic()
        try:
            await self.link.publish(
                self.topic("status"), self._status_payload("online"), qos=1, retain=True
            )
        except LinkDown as err:
            _LOGGER.debug("birth not published: %s", err)

    def announcement(self) -> dict[str, Any]:
        if self._announcement_provider is not None:
            body = dict(self._announcement_provider())
        else:
            body = {
                "name": self.name,
                "area": self.area,
                "assets": [
                    {k: a[k] for k in ("id", "name", "type", "model") if a.get(k) is not None}
                    for a in self.assets.effective()
                ],
                "settings": self.settings.values(),
                "settings_version": self.settings.version,
            }
        body.setdefault("name", self.name)
        body.setdefault("area", self.area)
        body.setdefault("sw", __version__)
        body["v"] = 1
        body["node"] = self.node_id
        return body

    async def _publish_config(self) -> None:
        await self._publish("config", self.announcement(), retain=True)

    async def _publish_snapshot(self) -> None:
        assets = self._snapshot_provider() if self._snapshot_provider is not None else []
        body = {
            "v": 1,
            "node": self.node_id,
            "hlc": self.clock.now().to_wire(),
            "assets": assets[:1000],
        }
        await self._publish("snapshot", body, retain=False)

    async def _rebirth(self, *, snapshot: bool) -> None:
        await self._publish_birth()
        await self._publish_config()
        if snapshot:
            await self._publish_snapshot()

    def events_payload(self, batch: Batch) -> bytes:
        """The `events` message for a batch, spliced from the stored wire encoding of each event
        (each was encoded once, when it was appended)."""
        return protocol.encode_event_batch(
            self.node_id,
            self.outbox.epoch,
            self.outbox.floor,
            [body for _, body in batch.rows],
            sent=self.clock.now().to_wire(),
            replay=batch.replay,
        )

    async def _send_batch(self, batch: Batch) -> None:
        await self.link.publish(self.topic("events"), self.events_payload(batch), qos=1)

    # health ------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        outbox = self.outbox.health()
        outbox["replay_rate"] = self.scheduler.replay_rate()
        outbox["retransmits"] = self.scheduler.retransmits
        body: dict[str, Any] = {
            "v": 1,
            "node": self.node_id,
            "hlc": self.clock.now().to_wire(),
            "uptime_s": int(time.monotonic() - self._started_at),
            "outbox": outbox,
            "transport": {
                **self.link.health(),
                "stale_host_offline": self.stale_host_offline,
                "stale_host_statuses": self.stale_host_statuses,
            },
            "clock": self.clock.health(),
            "rejected": {**self.rejected, "bad_event": self.rejected_events},
        }
        for section, provider in self._health_providers.items():
            try:
                body[section] = provider()
            except Exception:
                _LOGGER.exception("health provider %s failed", section)
        return body

    def _mark_health(self) -> None:
        if self._health_dirty is not None:
            self._health_dirty.set()

    def _check_interest(self) -> None:
        if self._interest() != self._health_marks:
            self._mark_health()

    def _interest(self) -> tuple[int, ...]:
        dropped = self.outbox.dropped
        return (
            dropped["routine"],
            dropped["critical"],
            self.clock.rejected,
            sum(self.rejected.values()),
            self.link.reconnects,
        )

    async def _health_loop(self) -> None:
        assert self._health_dirty is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEALTH_INTERVAL_S):
                    await self._health_dirty.wait()
            self._health_dirty.clear()
            self._health_marks = self._interest()
            if self.link.connected:
                await self._publish("health", self.health(), retain=True, qos=0)
            await asyncio.sleep(HEALTH_MIN_INTERVAL_S)
            if self._interest() != self._health_marks:
                self._health_dirty.set()

    async def _heard_loop(self) -> None:
        """Reports unknown tags, rate-limited; nothing while the user does not allow it."""
        while True:
            await asyncio.sleep(HEARD_INTERVAL_S)
            tags = self._heard_provider() if self._heard_provider is not None else None
            if tags and self.link.connected:
                body = {"v": 1, "node": self.node_id, "hlc": self.clock.now().to_wire()}
                await self._publish("heard", {**body, "tags": tags}, retain=False, qos=0)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _setting(self, key: str, default: Any) -> Any:
        try:
            value = self.settings.get(key)
        except KeyError:
            return default
        return default if value is None else value
