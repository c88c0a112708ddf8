"""What the soak campaign knows about every event: what each edge process appended (its commit
log, plus what store reads after crashes found), what Home Assistant applied (the integration's
debug line per applied identity), and the recovery samples that wait for a node's next new event.

An event is named by (node, creator run, seq): a run numbers its events without repeats and an
event keeps its seq when it moves to a new epoch, so the name never changes. The integration's
line `applied <node> <epoch> <seq> run=<run> hlc=<hlc> asset=<asset>` names the same triple.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from soak.parts import StoredEvent, parse_event

APPLIED_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) DEBUG \([^)]*\) "
    r"\[custom_components\.asset_tracker\.(?:apply|hub)\] applied (\S+) (\d+) (\d+) "
    r"run=(\d+|None) hlc=\[(\d+), (\d+)\] asset=(\S+)$"
)
WARNING_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (WARNING|ERROR|CRITICAL) ")
NUMBER_RE = re.compile(r"\d+")
REUSED_RE = re.compile(r"node (\S+) re-used seq (\d+) of epoch (\d+)")


@dataclass(slots=True)
class Event:
    node: str
    stored: StoredEvent
    created_m: float | None  # CLOCK_MONOTONIC of its commit (None: found only in a store)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.node, self.stored.run, self.stored.seq)


@dataclass(frozen=True, slots=True)
class Applied:
    node: str
    epoch: int
    seq: int
    run: int | None
    hlc: tuple[int, int]
    asset: str
    at_m: float  # when Home Assistant logged it, on the campaign's monotonic clock
    start: int  # which start of Home Assistant applied it (1 for the first)


@dataclass(slots=True)
class Sample:
    """One recovery: from a fault's end until Home Assistant applies one of the node's events
    committed after that end."""

    fault: int
    kind: str
    node: str
    end_m: float
    recovered_m: float | None = None
    applied_seen: int = 0  # events of the node applied while it waited (diagnostics)

    @property
    def seconds(self) -> float | None:
        return None if self.recovered_m is None else self.recovered_m - self.end_m


@dataclass
class Tail:
    """Reads the complete lines appended to a file since the last call."""

    path: Path
    offset: int = 0
    rest: bytes = b""

    def lines(self) -> list[bytes]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self.rest + chunk
        *complete, self.rest = data.split(b"\n")
        return complete


@dataclass
class Ledger:
    nodes: list[str]
    events: dict[tuple[str, int, int], Event] = field(default_factory=dict)
    by_n: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    applied: list[Applied] = field(default_factory=list)
    warnings: dict[str, int] = field(default_factory=dict)
    warning_samples: list[str] = field(default_factory=list)
    reuse_closures: list[tuple[str, int, int]] = field(default_factory=list)
    found_in_stores_only: int = 0
    samples: list[Sample] = field(default_factory=list)
    _pending: dict[str, list[Sample]] = field(default_factory=dict)
    _appended_tails: dict[str, Tail] = field(default_factory=dict)
    _ha_tails: list[Tail] = field(default_factory=list)
    _wall_minus_mono: float = 0.0
    _log_tz_s: float | None = None

    def __post_init__(self) -> None:
        self._wall_minus_mono = time.time() - time.monotonic()

    # sources

    def follow_appended(self, node: str, path: Path) -> None:
        self._appended_tails[node] = Tail(path)

    def follow_ha_log(self, path: Path) -> None:
        """A new Home Assistant start writes its own file; earlier ones are read to their end."""
        self._ha_tails.append(Tail(path))

    def poll(self) -> None:
        # appended first: an event is always known before the line that applied it is read
        for node, tail in self._appended_tails.items():
            for line in tail.lines():
                record = json.loads(line)
                self._add(node, parse_event(record["b"]), float(record["m"]))
        for start, tail in enumerate(self._ha_tails, 1):
            for line in tail.lines():
                self._ha_line(line.decode(errors="replace"), start)

    def add_from_store(self, node: str, stored: Iterable[StoredEvent]) -> None:
        """Events a store held that the commit log may not have had time to name (a kill between
        a commit and its log line)."""
        for event in stored:
            if (node, event.run, event.seq) not in self.events:
                self.found_in_stores_only += 1
                self._add(node, event, None)

    def _add(self, node: str, stored: StoredEvent, created_m: float | None) -> None:
        key = (node, stored.run, stored.seq)
        if key in self.events:
            return
        self.events[key] = Event(node, stored, created_m)
        self.by_n[stored.n] = key

    def _log_time(self, stamp: str) -> float:
        """A Home Assistant log time on the campaign's monotonic clock. The log writes local
        time; the zone is found once from the first line (read within seconds of its writing)."""
        parsed = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        if self._log_tz_s is None:
            self._log_tz_s = round((time.time() - parsed) / 900) * 900
        return parsed + self._log_tz_s - self._wall_minus_mono

    def _ha_line(self, line: str, start: int) -> None:
        match = APPLIED_RE.match(line)
        if match is None:
            warned = WARNING_RE.match(line)
            if warned is not None:
                self._warning(line)
            return
        stamp, node, epoch, seq, run, wall, counter, asset = match.groups()
        item = Applied(
            node,
            int(epoch),
            int(seq),
            None if run == "None" else int(run),
            (int(wall), int(counter)),
            asset,
            self._log_time(stamp),
            start,
        )
        self.applied.append(item)
        if item.run is None:
            return
        event = self.events.get((node, item.run, item.seq))
        if event is None or event.created_m is None:
            return
        for sample in self._pending.get(node, []):
            sample.applied_seen += 1
            if event.created_m > sample.end_m and sample.recovered_m is None:
                sample.recovered_m = item.at_m
        self._pending[node] = [s for s in self._pending.get(node, []) if s.recovered_m is None]

    def _warning(self, line: str) -> None:
        body = line.split("] ", 1)[-1]
        reused = REUSED_RE.search(body)
        if reused is not None:
            node, seq, epoch = reused.groups()
            self.reuse_closures.append((node, int(epoch), int(seq)))
            key = "integration closed an epoch: a seq re-used for another event"
        else:
            logger = line.split("[", 1)[-1].split("]", 1)[0]
            # numbers (message ids, ports) vary from line to line: one entry per kind of message
            key = f"{logger}: {NUMBER_RE.sub('N', body)[:90]}"
        self.warnings[key] = self.warnings.get(key, 0) + 1
        if len(self.warning_samples) < 40:
            self.warning_samples.append(line[:400])

    # recovery samples

    def sample(self, fault: int, kind: str, node: str, end_m: float) -> Sample:
        item = Sample(fault, kind, node, end_m)
        self.samples.append(item)
        self._pending.setdefault(node, []).append(item)
        return item

    def pending(self, node: str) -> int:
        """Samples of `node` still waiting for its next new event to be applied."""
        return len(self._pending.get(node, []))

    def expire(self, sample: Sample) -> None:
        """A sample that waited too long stays unrecovered (and is reported so)."""
        pending = self._pending.get(sample.node, [])
        if sample in pending:
            pending.remove(sample)

    def applied_keys(self) -> set[tuple[str, int, int]]:
        return {(a.node, a.run, a.seq) for a in self.applied if a.run is not None}

    def unaccounted(self, removed: set[tuple[str, int, int]]) -> int:
        """Appended events neither applied nor taken out of a store by a cut or a restore."""
        applied = self.applied_keys()
        return sum(1 for key in self.events if key not in applied and key not in removed)

    def summary_of(self, item: Applied) -> dict[str, Any]:
        return {
            "node": item.node,
            "epoch": item.epoch,
            "seq": item.seq,
            "run": item.run,
            "hlc": list(item.hlc),
            "asset": item.asset,
        }
