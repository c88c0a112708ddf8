"""The fault campaign's moving parts: the edge as a process, a consumer that plays the
integration's delivery side, the ledger that counts what arrived, and the report.

The consumer applies events with the protocol's dedupe (a contiguous watermark per epoch plus the
set of identities applied above it), remembers the run that created each applied seq and closes an
epoch when a seq arrives again from another creator (a seq given out twice, after a power cut or
a restored backup of the edge), publishes the retained ack (watermark, creators of the applied
seqs as `owners`; for a closed epoch the closing ack) after every message and announces itself on
the host status topic with a last will, as the integration does. Its dedupe state survives its own
restarts (kept in memory across `stop()`/`start()`, standing in for the integration's persisted
store). It also keeps, per applied identity, a digest of the event, so an identity that arrives
again for another event without the creators telling them apart is caught (`reused`).

The ledger counts by the event's number `n` (see edge_proc.py), independent of seq bookkeeping:
- lost: n in 1..total neither applied nor covered by the edge's purge (`floor` skips);
- duplicated: n applied more than once (wire duplicates that dedupe caught are counted apart);
- out of order: within a priority class, an n applied after a higher n of that class;
- HLC order violations: a higher n with an HLC not above a lower n's (causal order broken).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
)
LONG = os.environ.get("ASSET_TRACKER_FAULTS", "short") == "long"


def faketime_lib() -> str:
    for path in FAKETIME_LIBS:
        if Path(path).exists():
            return path
    raise RuntimeError("libfaketime is not installed (Debian package `faketime`): run `make setup`")


# the edge as a process -------------------------------------------------------------------------


class EdgeProcess:
    """Runs edge_proc.py; `kill9()` and `start()` again resume from the same data folder."""

    def __init__(
        self,
        workdir: Path,
        *,
        node: str,
        mqtt_port: int,
        total: int,
        rate: float,
        critical_every: int = 10,
        storage: dict[str, Any] | None = None,
        faketime_file: Path | None = None,
        tmpfs_kib: int | None = None,
        fallbacks: list[int] | None = None,
    ) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.node = node
        self.total = total
        self.rate = rate
        self.critical_every = critical_every
        self.faketime_file = faketime_file
        self.tmpfs_kib = tmpfs_kib
        self.config = {
            "node": {"id": node, "name": node},
            "mqtt": {
                "host": "127.0.0.1",
                "port": mqtt_port,
                "keepalive_s": 2,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 1.0,
                # more nodes of a clustered broker
                "fallbacks": [{"host": "127.0.0.1", "port": p} for p in fallbacks or ()],
            },
            "storage": {"path": str(self.data), "commit_window_ms": 20, **(storage or {})},
            "batching": {
                "window_ms": 100,
                "max_events": 200,
                "max_inflight": 20,
                "ack_timeout_s": 2.0,
            },
            "clock": {"max_offset_ms": 60_000},
            "settings": {"batching.window_ms": 100, "batching.max_events": 200},
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.statuses: list[dict[str, Any]] = []
        self.starts = 0
        self._reader: asyncio.Task[None] | None = None
        self.log_path = workdir / "edge.log"

    def command(self) -> list[str]:
        cfg = self.workdir / "edge.json"
        cfg.write_text(json.dumps(self.config))
        cmd = [
            sys.executable,
            str(HERE / "edge_proc.py"),
            str(cfg),
            "--total",
            str(self.total),
            "--rate",
            str(self.rate),
            "--critical-every",
            str(self.critical_every),
        ]
        if self.tmpfs_kib is None:
            return cmd
        # a small filesystem of its own for the outbox folder, in a private mount namespace that
        # ends with the process; the campaign reaches it through /proc/<pid>/root
        # (inside a chroot `/` is no mount point, so its propagation cannot be changed: there the
        # namespace the chroot runs in is private already)
        script = (
            "mount --make-rprivate / 2>/dev/null; "
            f"mount -t tmpfs -o size={self.tmpfs_kib}k,mode=0700 tmpfs {self.data} && exec "
            + " ".join(cmd)
        )
        return ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", script]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "edge_addon"), str(ROOT / "tests")])
        if self.faketime_file is not None:
            env.update(
                LD_PRELOAD=faketime_lib(),
                FAKETIME_TIMESTAMP_FILE=str(self.faketime_file),
                FAKETIME_NO_CACHE="1",
                FAKETIME_DONT_FAKE_MONOTONIC="1",
                # libfaketime up to 0.9.12 otherwise turns a wait on a CLOCK_MONOTONIC condition
                # variable into one whose deadline is long past: CPython's GIL wait then spins,
                # the edge's threads hand the GIL over at every check, and on a loaded machine its
                # first connection took tens of seconds (docs/root-causes.md). Later versions
                # handle an unfaked monotonic clock before looking at this setting.
                FAKETIME_FORCE_MONOTONIC_FIX="0",
            )
        return env

    async def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=log, env=self.env(), cwd=ROOT
        )
        log.close()
        self._reader = asyncio.create_task(self._read(self.proc))
        await self.wait_for(lambda s: s["connected"], 60, "edge connected")

    async def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, proc.stdout.readline)
            if not line:
                return
            with contextlib.suppress(json.JSONDecodeError):
                self.statuses.append(json.loads(line))

    @property
    def last(self) -> dict[str, Any]:
        return self.statuses[-1] if self.statuses else {}

    @property
    def fs_root(self) -> Path:
        """The data folder as the edge process sees it (inside its own mount namespace)."""
        assert self.proc is not None
        if self.tmpfs_kib is None:
            return self.data
        return Path(f"/proc/{self.proc.pid}/root") / str(self.data).lstrip("/")

    async def wait_for(self, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
        status = await self.status_within(predicate, timeout, what)
        if status is None:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}; last {self.last}"
            )
        return status

    async def status_within(
        self, predicate: Any, timeout: float, what: str
    ) -> dict[str, Any] | None:
        """The first new status matching `predicate`, or None after `timeout`; the edge must live."""
        deadline = time.monotonic() + timeout
        seen = len(self.statuses)
        while time.monotonic() < deadline:
            for status in self.statuses[seen:]:
                if predicate(status):
                    return status
            seen = max(seen, len(self.statuses) - 1)
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"edge exited ({self.proc.returncode}) waiting for {what}; "
                    f"log: {self.log_tail()}"
                )
            await asyncio.sleep(0.05)
        return None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.get_running_loop().run_in_executor(None, self.proc.wait)
        if self._reader is not None:
            await self._reader

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(None, self.proc.wait), 10
            )
        except TimeoutError:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            await self._reader


# the consumer ----------------------------------------------------------------------------------


@dataclass
class Applied:
    n: int
    seq: int
    epoch: int
    prio: str
    hlc: tuple[int, int]
    at: float


@dataclass
class EpochState:
    """What the consumer keeps per epoch (/PROTOCOL.md, the integration's dedupe state)."""

    watermark: int = 0
    above: set[int] = field(default_factory=set)
    high: int = 0
    # the creators of the applied seqs: disjoint [lo, hi, run] ranges, ascending, no gaps inside
    owners: list[list[int]] = field(default_factory=list)
    closed: bool = False

    def processed(self, seq: int) -> bool:
        return seq <= self.watermark or seq in self.above

    def owner(self, seq: int) -> int | None:
        i = bisect.bisect_right(self.owners, [seq, MAX_SAFE, MAX_SAFE]) - 1
        if i >= 0 and seq <= self.owners[i][1]:
            return self.owners[i][2]
        return None

    def add_owner(self, seq: int, run: int) -> None:
        """Records the creator of a newly applied seq (never one already in a range)."""
        ranges = self.owners
        i = bisect.bisect_right(ranges, [seq, MAX_SAFE, MAX_SAFE])
        before = ranges[i - 1] if i else None
        after = ranges[i] if i < len(ranges) else None
        if before is not None and before[1] + 1 == seq and before[2] == run:
            before[1] = seq
            if after is not None and after[0] == seq + 1 and after[2] == run:
                before[1] = after[1]
                del ranges[i]
        elif after is not None and after[0] == seq + 1 and after[2] == run:
            after[0] = seq
        else:
            ranges.insert(i, [seq, seq, run])


MAX_SAFE = 2**53 - 1
MAX_OWNER_RANGES = 1_024


@dataclass
class Closure:
    epoch: int
    identity: tuple[int, int]
    applied_run: int
    arrived_run: int


def event_digest(event: dict[str, Any]) -> str:
    """Names an event's content: the same stored event re-sent has the same digest."""
    return hashlib.sha256(
        json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]


@dataclass
class Consumer:
    """The integration's delivery side, against the real broker (directly, not through the proxy).

    Dedupe per epoch (watermark plus the seqs applied above it) and the closure of an epoch: an
    event whose seq was applied before from another creator run closes its epoch at once (it and
    the rest of its message are refused); every event of a closed epoch is refused and the
    closing ack (`closed`, the applied seqs `above` the watermark, `owners`) published again.
    Events without a creator run are deduplicated by identity alone.

    Per identity it keeps a digest of the event it applied: an event dropped as a duplicate whose
    digest differs is recorded in `reused` (the identity names two events, and the second one is
    lost without anyone noticing)."""

    host: str
    port: int
    node: str
    root: str = "asset_tracker"
    epoch: int | None = None
    # more nodes of a clustered broker: a session that fails or ends moves on to the next one
    # (what a TCP load balancer in front of the cluster does for Home Assistant)
    fallbacks: list[int] = field(default_factory=list)
    # the broker port of each session, in order
    sessions: list[int] = field(default_factory=list)
    _server: int = 0
    _attempts: int = 0
    states: dict[int, EpochState] = field(default_factory=dict)
    applied: list[Applied] = field(default_factory=list)
    wire_duplicates: int = 0
    # (epoch, seq) a floor acknowledged without the consumer applying it
    skipped_by_floor: set[tuple[int, int]] = field(default_factory=set)
    # the floor of each epoch's first message: the seqs below it are not (or no longer) its events
    first_floor: dict[int, int] = field(default_factory=dict)
    epochs: list[int] = field(default_factory=list)
    messages: int = 0
    malformed: int = 0
    acks: int = 0
    # identity -> (digest, n) of the event applied under it
    digests: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)
    # an event dropped as a duplicate of another event applied under its identity, which the
    # creator runs did not reveal: (identity, n applied under it, n that arrived under it)
    reused: list[tuple[tuple[int, int], int, int]] = field(default_factory=list)
    # n -> every (epoch, seq, creator run) the event arrived under, applied or not
    received: dict[int, set[tuple[int, int, int | None]]] = field(default_factory=dict)
    refused: int = 0
    # epochs closed because a seq arrived from another creator than the one applied
    closures: list[Closure] = field(default_factory=list)
    # how far an applied event's HLC (or a message's `sent`) was ahead of this clock, at most
    hlc_ahead_ms: int = 0
    _task: asyncio.Task[None] | None = None
    _client: aiomqtt.Client | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _last_ack: bytes | None = None

    @property
    def host_topic(self) -> str:
        return f"{self.root}/host/status"

    @property
    def state(self) -> EpochState:
        """The current epoch's state (the epoch of the newest accepted message)."""
        if self.epoch is None:
            return EpochState()
        return self.states[self.epoch]

    @property
    def watermark(self) -> int:
        return self.state.watermark

    @property
    def above(self) -> set[int]:
        return self.state.above

    def acknowledged(self, epoch: int, seq: int, run: int | None) -> bool:
        """Whether the acks this consumer published cover the event of `run` sent as (epoch,
        seq): its seq is processed and, when the event names its creator, was applied from it
        (an ack names the creators of what it covers; a seq skipped below a floor or applied
        from another run does not acknowledge this event)."""
        state = self.states.get(epoch)
        if state is None or not state.processed(seq):
            return False
        return run is None or state.owner(seq) == run

    def _host(self, state: str) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "state": state,
                "protocols": [1],
                "hlc": [int(time.time() * 1000), 0],
                # the will is stamped before the birth: the session names it as this one's
                "session": f"consumer-{self._attempts}",
            }
        ).encode()

    async def start(self) -> None:
        self._ready.clear()
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)

    async def stop(self, *, graceful: bool = True) -> None:
        """Graceful: announces offline like an orderly shutdown; otherwise the will does it."""
        client = self._client
        if graceful and client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self.host_topic, self._host("offline"), qos=1, retain=True)
        if self._task is not None:
            if not graceful and client is not None:
                # end the TCP connection without DISCONNECT, so the broker publishes the last will
                sock = client._client.socket()
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                await asyncio.sleep(0.1)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        self._task = None
        self._client = None

    async def _run(self) -> None:
        ack_topic = f"{self.root}/{self.node}/ack"
        ports = [self.port, *self.fallbacks]
        while True:
            port = ports[self._server % len(ports)]
            self._attempts += 1
            try:
                async with aiomqtt.Client(
                    self.host,
                    port,
                    identifier=f"consumer-{self.node}",
                    clean_session=True,
                    keepalive=2 if self.fallbacks else 5,
                    timeout=3,
                    will=aiomqtt.Will(self.host_topic, self._host("offline"), 1, True),
                ) as client:
                    self._client = client
                    self.sessions.append(port)
                    # QoS 0, as the integration subscribes (PROTOCOL.md, broker requirements)
                    await client.subscribe(f"{self.root}/{self.node}/events", qos=0)
                    # subscribed first, so nothing the node replays for us is missed
                    await client.publish(self.host_topic, self._host("online"), qos=1, retain=True)
                    if self._last_ack is not None:
                        # a broker that lost its retained messages must not lose our ack
                        await client.publish(ack_topic, self._last_ack, qos=1, retain=True)
                    self._ready.set()
                    async for message in client.messages:
                        ack = self.on_events(bytes(message.payload))  # type: ignore[arg-type]
                        if ack is not None:
                            self._last_ack = ack
                            await client.publish(ack_topic, ack, qos=1, retain=True)
                            self.acks += 1
            except aiomqtt.MqttError:
                self._client = None
                self._server += 1 if self.fallbacks else 0
                await asyncio.sleep(0.2)

    def on_events(self, payload: bytes) -> bytes | None:
        self.messages += 1
        try:
            msg = json.loads(payload)
            epoch, floor, events = int(msg["epoch"]), int(msg["floor"]), list(msg["events"])
            seqs = [int(event["seq"]) for event in events]
            runs = [event.get("run") for event in events]
            runs = [int(r) if r is not None else None for r in runs]
        except (ValueError, KeyError, TypeError, AttributeError):
            self.malformed += 1
            return None
        now_ms = time.time() * 1000
        sent = msg.get("sent")
        if isinstance(sent, list) and sent:
            self.hlc_ahead_ms = max(self.hlc_ahead_ms, int(sent[0] - now_ms))
        for event, seq, run in zip(events, seqs, runs, strict=True):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.received.setdefault(int(event["data"]["n"]), set()).add((epoch, seq, run))
        state = self.states.get(epoch)
        fresh = state is None
        if state is None:
            state = self.states[epoch] = EpochState()
            self.epochs.append(epoch)
            self.first_floor[epoch] = floor
        if state.closed:
            self.refused += len(events)
            return self._ack(epoch, state)
        self.epoch = epoch
        # every seq below floor is acknowledged, purged, or not of this epoch (an epoch may start
        # above 1: that first floor skips nothing)
        if not fresh:
            for seq in range(state.watermark + 1, floor):
                if seq not in state.above:
                    self.skipped_by_floor.add((epoch, seq))
        state.watermark = max(state.watermark, floor - 1)
        state.above = {s for s in state.above if s > state.watermark}
        now = time.monotonic()
        for i, (event, seq, run) in enumerate(zip(events, seqs, runs, strict=True)):
            identity = (epoch, seq)
            digest = event_digest(event)
            n = int(event["data"]["n"])
            if state.processed(seq):
                owner = state.owner(seq)
                if owner is not None and run is not None and owner != run:
                    # the seq was given out twice: close the epoch, refuse the rest
                    state.closed = True
                    self.closures.append(Closure(epoch, identity, owner, run))
                    self.refused += len(events) - i
                    break
                self.wire_duplicates += 1
                before = self.digests.get(identity)
                if before is not None and before[0] != digest:
                    self.reused.append((identity, before[1], n))
                continue
            state.above.add(seq)
            state.high = max(state.high, seq)
            if run is not None:
                state.add_owner(seq, run)
            self.digests[identity] = (digest, n)
            hlc = event["hlc"]
            self.hlc_ahead_ms = max(self.hlc_ahead_ms, int(hlc[0] - now_ms))
            self.applied.append(Applied(n, seq, epoch, event["prio"], (hlc[0], hlc[1]), now))
        while state.watermark + 1 in state.above:
            state.watermark += 1
            state.above.discard(state.watermark)
        return self._ack(epoch, state)

    def _ack(self, epoch: int, state: EpochState) -> bytes:
        body: dict[str, Any] = {
            "v": 1,
            "node": self.node,
            "epoch": epoch,
            "seq": state.watermark,
            "hlc": [int(time.time() * 1000), 0],
        }
        if state.owners:
            # the newest ranges when there are too many: the edge compares only seqs above its
            # own watermark, and treats a seq without an owner as agreeing
            body["owners"] = state.owners[-MAX_OWNER_RANGES:]
        if state.closed:
            body["closed"] = True
            body["above"] = sorted(state.above)
        return json.dumps(body).encode()

    async def wait_watermark(self, seq: int, timeout: float) -> float:
        """Seconds until the contiguous watermark reaches `seq`."""
        started = time.monotonic()
        while self.watermark < seq:
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"watermark {self.watermark} did not reach {seq} within {timeout} s"
                )
            await asyncio.sleep(0.02)
        return time.monotonic() - started


# counting --------------------------------------------------------------------------------------


@dataclass
class Tally:
    total: int
    applied: int
    lost: int
    duplicated: int
    out_of_order: int
    hlc_order_violations: int
    purged: int
    wire_duplicates: int
    lost_sample: list[int]
    # the first few events applied after a later one of their class, each as (the event applied
    # right before it, it)
    out_of_order_sample: list[tuple[Applied, Applied]] = field(default_factory=list)


def tally(consumer: Consumer, total: int, purged_by_edge: int) -> Tally:
    counts: dict[int, int] = {}
    last_n: dict[str, int] = {}
    out_of_order = 0
    sample: list[tuple[Applied, Applied]] = []
    for i, item in enumerate(consumer.applied):
        counts[item.n] = counts.get(item.n, 0) + 1
        if counts[item.n] == 1:
            if item.n < last_n.get(item.prio, 0):
                out_of_order += 1
                if len(sample) < 3:
                    sample.append((consumer.applied[i - 1], item))
            last_n[item.prio] = max(last_n.get(item.prio, 0), item.n)
    first = {}
    for item in consumer.applied:
        first.setdefault(item.n, item)
    by_n = [first[n] for n in sorted(first)]
    violations = sum(1 for a, b in itertools.pairwise(by_n) if not a.hlc < b.hlc)
    missing = [n for n in range(1, total + 1) if n not in counts]
    # a purge the edge reported (by count) explains exactly that many missing events, no more
    purged = min(len(missing), purged_by_edge, len(consumer.skipped_by_floor))
    lost = len(missing) - purged
    return Tally(
        total=total,
        applied=len(counts),
        lost=lost,
        duplicated=sum(c - 1 for c in counts.values()),
        out_of_order=out_of_order,
        hlc_order_violations=violations,
        purged=purged,
        wire_duplicates=consumer.wire_duplicates,
        lost_sample=missing[:10] if lost else [],
        out_of_order_sample=sample,
    )


# the report ------------------------------------------------------------------------------------


@dataclass
class FaultResult:
    kind: str
    injected: int
    tally: Tally
    recover_s: list[float]
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        rec = sorted(self.recover_s)
        return {
            "kind": self.kind,
            "injected": self.injected,
            "events": self.tally.total,
            "applied": self.tally.applied,
            "lost": self.tally.lost,
            "duplicated": self.tally.duplicated,
            "out_of_order": self.tally.out_of_order,
            "hlc_order_violations": self.tally.hlc_order_violations,
            "purged": self.tally.purged,
            "wire_duplicates_deduped": self.tally.wire_duplicates,
            "recover_s_max": round(rec[-1], 3) if rec else None,
            "recover_s_median": round(rec[len(rec) // 2], 3) if rec else None,
            "recover_s": [round(r, 3) for r in self.recover_s],
            "notes": self.notes,
            **self.extra,
        }


def write_report(
    results: list[FaultResult],
    out_dir: Path,
    form: str,
    broker: str = "Real mosquitto",
    extra: dict[str, Any] | None = None,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r.as_dict() for r in results]
    body = {
        "form": form,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "broker": broker,
        **(extra or {}),
        "faults": rows,
        "totals": {
            key: sum(r[key] for r in rows)
            for key in ("injected", "events", "lost", "duplicated", "out_of_order", "purged")
        },
    }
    (out_dir / "report.json").write_text(json.dumps(body, indent=2) + "\n")
    lines = [
        f"# Fault campaign ({form} form)",
        "",
        f"Generated {body['generated_at']}. {broker}, the edge as a separate process, "
        "events counted by number at the consumer (see tests/faults/campaign.py).",
        "",
        "| fault | injected | events | lost | duplicated | out of order | HLC order violations "
        "| purged (counted) | wire duplicates deduped | recover max s | recover median s | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['injected']} | {r['events']} | {r['lost']} | {r['duplicated']} "
            f"| {r['out_of_order']} | {r['hlc_order_violations']} | {r['purged']} "
            f"| {r['wire_duplicates_deduped']} | {r['recover_s_max']} | {r['recover_s_median']} "
            f"| {r['notes']} |"
        )
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
