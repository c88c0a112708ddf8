"""The soak campaign's moving parts: the broker (restarted with or without persistence), Home
Assistant (one log file per start, so a restart never rotates an earlier log away), the edge nodes
as processes (each behind its own fault proxy, its data folder on a small filesystem of its own
under the power-cut layer, its wall clock under libfaketime) and a reader for an outbox store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.hass_process import HassProcess
from faults.campaign import faketime_lib
from faults.proxy import FaultProxy
from mosquitto_broker import Mosquitto
from outbox_files import journal_unfolded
from powercut import Disk

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BLOCK = 1_000_000  # event numbers per edge process
NODE_SPAN = 10**12  # event numbers per node: node i numbers from (i + 1) * NODE_SPAN
VOLUME_MIB = 64  # the filesystem that holds a node's data folder (filled for "disk full")


class SoakBroker(Mosquitto):
    """A mosquitto whose persistence is chosen at every (re)start. Without persistence its state
    file is removed too, so a later start with persistence never loads state from before."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.persistence = True

    @property
    def db_path(self) -> Path:
        return self.workdir / "mosquitto.db"

    def write_conf(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"persistence {'true' if self.persistence else 'false'}\n"
            f"persistence_location {self.workdir}/\n"
            "max_inflight_messages 100\n"
            "max_queued_messages 100000\n"
            "set_tcp_nodelay true\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
        )

    def restart_with(self, persistence: bool, downtime: float) -> None:
        """Blocking: stop, wait `downtime`, start again on the same port."""
        self.stop()
        self.persistence = persistence
        if not persistence:
            self.db_path.unlink(missing_ok=True)
        time.sleep(downtime)
        self.start()


class SoakHass(HassProcess):
    """`hass` writing its log to a new file at every start (Home Assistant rotates its log file at
    start and keeps one old copy: with one file per start nothing is rotated away)."""

    @property
    def logs_dir(self) -> Path:
        return self.config_dir / "logs"

    def current_log(self) -> Path:
        return self.logs_dir / f"home-assistant-{self.starts:03d}.log"

    def start(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "homeassistant",
                    "-c",
                    str(self.config_dir),
                    "--skip-pip",
                    "--log-no-color",
                    "--log-file",
                    str(self.current_log()),
                ],
                stdout=subprocess.DEVNULL,
                stderr=out,
                env=env,
                start_new_session=True,
            )


# outbox stores -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEvent:
    run: int
    seq: int
    n: int
    hlc: tuple[int, int]
    asset: str
    kind: str
    value: int | None


def parse_event(body: dict[str, Any]) -> StoredEvent:
    data = body.get("data") or {}
    readings = data.get("readings") or {}
    value = readings.get("soak_n")
    return StoredEvent(
        run=int(body["run"]),
        seq=int(body["seq"]),
        n=int(data["n"]),
        hlc=(int(body["hlc"][0]), int(body["hlc"][1])),
        asset=str(body["asset"]),
        kind=str(body["kind"]),
        value=int(value) if value is not None else None,
    )


def journal_bodies(path: Path, epoch: int, acked: int) -> list[bytes]:
    """The events of the journal's newest lap the outbox folds into its store on open."""
    return [e.body for e in journal_unfolded(path, epoch, acked)[0]]


def read_store(folder: Path, scratch: Path) -> dict[tuple[int, int], StoredEvent] | None:
    """The events in the outbox store of `folder`, by (creator run, seq), read from a copy (opening
    the original would change it); None when the store cannot be read (the edge will move it
    aside), an empty dict when there is none."""
    if not (folder / "outbox.db").exists():
        return {}
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / f"store-{time.monotonic_ns()}"
    copy.mkdir()
    try:
        for name in ("outbox.db", "outbox.db-wal"):
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(folder / name, copy / name)
        db = sqlite3.connect(copy / "outbox.db")
        try:
            if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
                return None
            found: dict[tuple[int, int], StoredEvent] = {}
            bodies = [
                b for t in ("critical", "routine") for (b,) in db.execute(f"SELECT body FROM {t}")
            ]
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            bodies += journal_bodies(folder / "outbox.db-log", meta["epoch"], meta["acked"])
            for body in bodies:
                event = parse_event(json.loads(body))
                found[(event.run, event.seq)] = event
            return found
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError):
            return None
        finally:
            db.close()
    finally:
        shutil.rmtree(copy, ignore_errors=True)


# edge nodes ----------------------------------------------------------------------------------


@dataclass
class ClockFigures:
    """What a node's status lines said about its clock."""

    # the node's HLC wall part minus real (not faked) time, at most
    ahead_of_real_ms: int = 0
    # health clock.ahead_ms while the node's own clock showed real time, and while it was set back
    health_ahead_ms_true: int = 0
    health_ahead_ms_set_back: int = 0
    backward_jumps: int = 0
    rejected: int = 0
    statuses: int = 0


@dataclass
class NodeFigures:
    commit_errors: int = 0  # summed over processes
    dropped: int = 0  # the store's lifetime purge counter, highest seen
    rotations: dict[tuple[int, int], int] = field(default_factory=dict)  # (from, to) -> lost
    ack_ahead: int = 0
    recovered_stores: list[dict[str, Any]] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)


def set_clock_offset(path: Path, seconds: float) -> None:
    """libfaketime reads the offset from this file: replaced atomically, never half-written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{seconds:+.3f}\n")
    os.replace(tmp, path)


class SoakNode:
    """One edge node: its process (tests/soak/soak_edge.py), its proxy to the broker, its data
    folder on a tmpfs of its own under the power-cut layer and its faked wall clock."""

    def __init__(
        self,
        name: str,
        index: int,
        sync: str,
        work: Path,
        broker: Mosquitto,
        rate: float,
        assets: list[str],
    ) -> None:
        self.name = name
        self.index = index
        self.sync = sync
        self.dir = work / "nodes" / name
        self.vol = self.dir / "vol"
        self.data = self.vol / "data"
        self.scratch = self.dir / "scratch"
        self.rate = rate
        self.assets = assets
        self.appended = self.dir / "appended.jsonl"
        self.pause_file = self.dir / "pause"
        self.clock_file = self.dir / "faketime"
        self.clock_offset_s = 0.0
        self.proxy = FaultProxy(broker.host, broker.port)
        self.disk: Disk | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None
        self.processes = 0
        self.spawned_m = 0.0
        self.expected_exit = False
        self.last: dict[str, Any] = {}
        self.clock = ClockFigures()
        self.figures = NodeFigures()
        self._run_commit_errors = 0
        self._connected_once = False
        self.start_to_connected_s: list[float] = []
        self.connected_at_m: list[float] = []  # every new broker session, as statuses showed it
        self._connects = 0
        self.on_exit: Callable[[SoakNode, str], None] | None = None

    # setup

    def prepare(self) -> None:
        """The node's own filesystem (a tmpfs: the process's mount namespace is the campaign's,
        private to it) and the power-cut layer over its data folder; the layer's journal lives on
        the main disk, so filling the node's filesystem never stops the journal."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.vol.mkdir(exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={VOLUME_MIB}m,mode=0700", "tmpfs", str(self.vol)],
            check=True,
        )
        self.disk = Disk(self.data, self.vol / "powercut")
        self.disk.journal = self.dir / "powercut-journal"
        set_clock_offset(self.clock_file, 0)
        self.proxy.start()

    def release(self) -> None:
        self.proxy.stop()
        subprocess.run(["umount", "-l", str(self.vol)], check=False, capture_output=True)

    def config(self) -> dict[str, Any]:
        return {
            "node": {"id": self.name, "name": f"Soak {self.name}", "area": f"Area {self.name}"},
            "mqtt": {
                "host": self.proxy.host,
                "port": self.proxy.port,
                "keepalive_s": 5,
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 2.0,
            },
            "storage": {"path": str(self.data), "sync": self.sync, "commit_window_ms": 50},
            "batching": {
                "window_ms": 200,
                "max_events": 200,
                "max_inflight": 20,
                "ack_timeout_s": 5.0,
            },
            "clock": {"max_offset_ms": 60_000},
            "settings": {"batching.window_ms": 200, "batching.max_events": 200},
            "assets": [{"id": a, "name": a, "type": "sensor"} for a in self.assets],
        }

    def env(self) -> dict[str, str]:
        assert self.disk is not None
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "edge_addon"), str(ROOT / "tests")])
        env.update(self.disk.env())
        env["LD_PRELOAD"] = f"{self.disk.shim}:{faketime_lib()}"
        env.update(
            FAKETIME_TIMESTAMP_FILE=str(self.clock_file),
            FAKETIME_CACHE_DURATION="1",  # an offset change is seen within a second
            FAKETIME_DONT_FAKE_MONOTONIC="1",
            # without it libfaketime <= 0.9.12 makes CPython's GIL wait spin (docs/root-causes.md)
            FAKETIME_FORCE_MONOTONIC_FIX="0",
        )
        return env

    # the process

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def first_number(self) -> int:
        return (self.index + 1) * NODE_SPAN + self.processes * BLOCK + 1

    async def spawn(self) -> None:
        """Starts a new edge process (its power-cut journal must be empty: cut or forgotten)."""
        cfg = self.dir / "edge.json"
        cfg.write_text(json.dumps(self.config()))
        self.data.mkdir(parents=True, exist_ok=True)
        first = self.first_number()
        self.processes += 1
        self.expected_exit = False
        self._run_commit_errors = 0
        self._connected_once = False
        self._connects = 0
        self.last = {}
        with (self.dir / "edge.log").open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE / "soak_edge.py"),
                str(cfg),
                "--first",
                str(first),
                "--rate",
                str(self.rate),
                "--assets",
                ",".join(self.assets),
                "--appended",
                str(self.appended),
                "--pause",
                str(self.pause_file),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=self.env(),
                cwd=ROOT,
            )
        self.spawned_m = time.monotonic()
        self.reader = asyncio.create_task(self._read(self.proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            with contextlib.suppress(ValueError):
                self._on_status(json.loads(line))
        code = await proc.wait()
        self.figures.commit_errors += self._run_commit_errors
        self._run_commit_errors = 0
        if not self.expected_exit and self.on_exit is not None:
            self.on_exit(self, f"exit code {code}; log: {self.log_tail()}")

    def _on_status(self, status: dict[str, Any]) -> None:
        self.last = status
        now_m, now_wall = time.monotonic(), time.time()
        connected = bool(status.get("connected"))
        connects = int(status.get("connects") or 0)
        if connects > self._connects:
            # a new broker session (counted by the link, so one shorter than a status line counts)
            self.connected_at_m.append(float(status["m"]))
        self._connects = connects
        if connected and not self._connected_once:
            self._connected_once = True
            self.start_to_connected_s.append(float(status["m"]) - self.spawned_m)
        real_ms = (now_wall - (now_m - float(status["m"]))) * 1000
        clock = self.clock
        clock.statuses += 1
        clock.ahead_of_real_ms = max(clock.ahead_of_real_ms, int(status["hlc"][0] - real_ms))
        health = status.get("clock") or {}
        ahead = int(health.get("ahead_ms") or 0)
        # the node's own clock: real time, or set back (libfaketime) by the campaign
        if abs(float(status["t"]) * 1000 - real_ms) < 1000:
            clock.health_ahead_ms_true = max(clock.health_ahead_ms_true, ahead)
        else:
            clock.health_ahead_ms_set_back = max(clock.health_ahead_ms_set_back, ahead)
        clock.backward_jumps = max(clock.backward_jumps, int(health.get("backward_jumps") or 0))
        clock.rejected = max(clock.rejected, int(health.get("rejected") or 0))
        figures = self.figures
        self._run_commit_errors = max(self._run_commit_errors, int(status["commit_errors"]))
        figures.dropped = max(figures.dropped, sum(int(v) for v in status["dropped"].values()))
        rotated = status.get("rotated")
        if isinstance(rotated, dict):
            figures.rotations[(int(rotated["from"]), int(rotated["to"]))] = int(
                rotated.get("lost") or 0
            )
        figures.ack_ahead = max(figures.ack_ahead, int(status.get("ack_ahead") or 0))
        recovered = status.get("recovered")
        if isinstance(recovered, dict) and recovered not in figures.recovered_stores:
            figures.recovered_stores.append(recovered)

    async def kill(self) -> None:
        """SIGKILL (nothing more is written), and wait for the process to be gone."""
        if self.proc is None:
            return
        self.expected_exit = True
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        if self.reader is not None:
            await self.reader

    async def died_by_itself(self, timeout: float) -> bool:
        """Waits for the process to end on its own (the power-cut layer's armed self-kill)."""
        assert self.proc is not None
        self.expected_exit = True
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return False
        if self.reader is not None:
            await self.reader
        return True

    async def stop(self, timeout: float = 20.0) -> None:
        """An orderly stop (SIGTERM); SIGKILL after `timeout`."""
        if self.proc is None:
            return
        self.expected_exit = True
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            await self.reader

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = (self.dir / "edge.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:])

    def set_clock(self, seconds: float) -> None:
        self.clock_offset_s = seconds
        set_clock_offset(self.clock_file, seconds)

    def store(self) -> dict[tuple[int, int], StoredEvent] | None:
        return read_store(self.data, self.scratch)
