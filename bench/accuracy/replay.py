"""A harness run recorded for playing through Home Assistant (`make accuracy-ha`, docs/accuracy.md).

`Recording` is the harness's `Run` that also keeps what a real edge node would have put on the
wire: every delivery with the node's seq (in the order the node's outbox would have numbered its
events, their emission order) and hybrid-clock stamp (emission time), the training vectors, and,
at every whole simulated second, what each off-line locator said. `score` turns readings taken
at those seconds (from Home Assistant's entities, or the off-line locators') into the harness's
own figures, so the two can be put side by side line by line. No Home Assistant import here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asset_tracker_edge.events import EdgeEvent, Priority

from .baselines import HOUSEKEEPING_MS, OursLocator, OursPlanLocator
from .edge import START_MS, Delivery, EdgeNodeSim
from .harness import LocatorScore, Run
from .scenario import Scenario

RECHECK_MS = 500  # placement.RECHECK_S


@dataclass(frozen=True, slots=True)
class Reading:
    """Where a locator (or Home Assistant's entities) put one tag at one second."""

    room: str | None
    floor: str | None
    position: tuple[str, float, float] | None = None  # floor, x, y


@dataclass(slots=True)
class Stamp:
    """What the node's outbox gave an event when it was emitted."""

    seq: int
    hlc: tuple[int, int]


@dataclass(slots=True)
class Message:
    """One MQTT message of a node: a status change or a batch of events (one critical event, or
    the routine events of one batch window)."""

    at_ms: int
    node: str
    online: bool | None = None
    events: list[tuple[EdgeEvent, Stamp]] = field(default_factory=list)

    @property
    def routine(self) -> bool:
        return bool(self.events) and self.events[0][0].priority is not Priority.CRITICAL


@dataclass(frozen=True, slots=True)
class Second:
    t_ms: int  # from the start of the measured run
    scored: bool
    offline: frozenset[str]


def _no_neighbours(locator: OursLocator) -> None:
    """The estimator's rooms as Home Assistant gives them: no adjacency (it knows none)."""
    impl = locator._impl
    impl.set_rooms([type(r)(r.room_id, r.floor, r.nodes) for r in impl.rooms.values()])


class OursAsHa(OursLocator):
    """`ours` configured as the integration configures it: the rooms without neighbours."""

    name = "ours_ha"

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        _no_neighbours(self)


class OursPlanAsHa(OursPlanLocator):
    """`ours_plan` configured as the integration configures it: no neighbours."""

    name = "ours_plan_ha"

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        _no_neighbours(self)


class AskedAsHa:
    """`ours_ha` (or `ours_plan_ha`) asked when the integration asks it, not every tick: when an
    event about the asset is applied (at its delivery time), 0.5 s later while its estimate is
    still moving (one timer for all assets, as the placement's re-check) and at the hub's 30 s
    housekeeping; between those, the last answer stands (what the entities show). The timers run
    as the through-Home-Assistant player fires them (`timers`). Fed as the placement feeds it: a
    node's `away` stands until that node reports the asset present again (its telemetry in between
    takes nothing back)."""

    def __init__(self, scenario: Scenario, plan: bool = False) -> None:
        self.inner = (OursPlanAsHa if plan else OursAsHa)(scenario)
        self.name = f"{self.inner.name}_asked"
        self.answers: dict[str, Any] = {}
        self.unsettled: set[str] = set()
        self.recheck_at: int | None = None
        self.housekeeping_at = HOUSEKEEPING_MS
        self.away: dict[tuple[str, str], bool] = {}  # (asset, node) -> its last presence was away
        self.train = self.inner.train
        self.node_online = self.inner.node_online

    def settings(self) -> dict[str, Any]:
        return self.inner.settings()

    def _ask(self, asset: str, now: int) -> None:
        found = self.answers[asset] = self.inner.locate(asset, now)
        if found.settled:
            self.unsettled.discard(asset)
            return
        self.unsettled.add(asset)
        if self.recheck_at is None:
            self.recheck_at = now + RECHECK_MS

    def timers(self, now: int) -> None:
        """Runs the re-check and housekeeping due by now. They run at `now`, as Home Assistant's
        timers run in the player: at the first tick or message time at or after they are due."""
        if self.housekeeping_at <= now:
            while self.housekeeping_at <= now:
                self.housekeeping_at += HOUSEKEEPING_MS
            for asset in sorted(self.answers):
                self._ask(asset, now)
        if self.recheck_at is not None and self.recheck_at <= now:
            self.recheck_at = None
            for asset in sorted(self.unsettled):
                self._ask(asset, now)

    def observe(self, asset: str, node: str, rssi: float, at_ms: int, now: int) -> None:
        self.inner.observe(asset, node, rssi, at_ms)
        self._ask(asset, max(now, at_ms))

    def lost(self, asset: str, node: str, at_ms: int, now: int) -> None:
        self.inner.lost(asset, node, at_ms)
        self._ask(asset, max(now, at_ms))

    def locate(self, asset: str, now_ms: int) -> Any:
        self.timers(now_ms)
        return self.answers.get(asset) or Reading(None, None)


EXTRA: dict[str, Callable[[Scenario], Any]] = {
    "ours_ha": OursAsHa,
    "ours_plan_ha": OursPlanAsHa,
    "ours_ha_asked": AskedAsHa,
    "ours_plan_ha_asked": lambda scenario: AskedAsHa(scenario, plan=True),
}


class Recording(Run):
    """The harness run, keeping what Home Assistant is to be given and the off-line answers."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        duration_s: float | None = None,
        locators: Sequence[str] = ("ours", "ours_plan"),
        extra: Iterable[str] = tuple(EXTRA),
    ) -> None:
        super().__init__(scenario, seed, False, list(locators), duration_s)
        for name in extra:
            self.scores[name] = LocatorScore(name, EXTRA[name](scenario))
        self.deliveries: list[Delivery] = []
        self.stamps: dict[int, Stamp] = {}  # id(event) -> its outbox identity
        self.training_samples: dict[str, list[dict[str, float]]] = {}
        self.seconds: list[Second] = []
        self.answers: dict[str, list[list[Reading]]] = {name: [] for name in self.scores}
        self._last: dict[str, dict[str, Any]] = {name: {} for name in self.scores}
        for name, score in self.scores.items():
            score.impl.locate = self._keeping(name, score.impl.locate)
        for sim in self.edge.nodes.values():
            sim.pipeline._emit = self._stamping(sim)

    def _stamping(self, sim: EdgeNodeSim) -> Callable[[EdgeEvent], Any]:
        """The node's emit, numbering each event as its outbox would (seq in emission order, the
        hybrid clock at emission)."""
        state = {"seq": 0, "hlc": (0, 0)}

        async def emit(event: EdgeEvent) -> None:
            now = sim.clock[0]
            pt, logical = state["hlc"]  # type: ignore[misc]
            hlc = (now, 0) if now > pt else (pt, logical + 1)
            state["seq"] = int(state["seq"]) + 1  # type: ignore[call-overload]
            state["hlc"] = hlc
            self.stamps[id(event)] = Stamp(int(state["seq"]), hlc)  # type: ignore[call-overload]
            await sim._emit(event)

        return emit

    def _keeping(self, name: str, locate: Callable[[str, int], Any]) -> Callable[[str, int], Any]:
        last = self._last[name]

        def keep(asset: str, now_ms: int) -> Any:
            found = last[asset] = locate(asset, now_ms)
            return found

        return keep

    def _call(self, score: LocatorScore, method: str, *args: Any) -> Any:
        if method == "train":
            self.training_samples[args[0]] = [dict(s) for s in args[1]]
        return super()._call(score, method, *args)

    def _apply(self, score: LocatorScore, item: Any) -> None:
        if score is next(iter(self.scores.values())):
            self.deliveries.append(item)
        event = item.event
        if score.name not in EXTRA or event is None or event.asset is None:
            super()._apply(score, item)
            return
        # the integration keeps a sighting at its event's stamp (emission), not its obs_ms
        at = self.stamps[id(event)].hlc[0] - START_MS
        asked = isinstance(score.impl, AskedAsHa)
        now = (item.at_ms - START_MS,) if asked else ()
        if asked:
            score.impl.timers(now[0])
        away = event.kind == "presence" and event.data.get("state") == "away"
        if asked and event.kind == "presence":
            score.impl.away[(event.asset, item.node)] = away
        if away or (asked and score.impl.away.get((event.asset, item.node))):
            # the integration keeps a node's `away` until that node reports the asset present
            # again: its telemetry in between is no reading
            self._call(score, "lost", event.asset, item.node, at, *now)
        elif event.kind in ("presence", "telemetry") and event.data.get("rssi") is not None:
            rssi = float(event.data["rssi"])
            self._call(score, "observe", event.asset, item.node, rssi, at, *now)

    def _evaluate(self, t: int, scored: bool, offline: set[str]) -> None:
        super()._evaluate(t, scored, offline)
        if t % 1000:
            return
        self.seconds.append(Second(t, scored, frozenset(offline)))
        for name in self.scores:
            last = self._last[name]
            self.answers[name].append([reading(last[tag.asset_id]) for tag in self.tags])

    # what goes on the wire

    def messages(self) -> list[Message]:
        """The deliveries as MQTT messages, in the order the integration gets them."""
        out: list[Message] = []
        for item in sorted(self.deliveries):
            if item.online is not None:
                out.append(Message(item.at_ms, item.node, online=item.online))
                continue
            event = item.event
            assert event is not None
            pair = (event, self.stamps[id(event)])
            last = out[-1] if out else None
            if (
                event.priority is not Priority.CRITICAL
                and last is not None
                and last.routine
                and last.node == item.node
                and last.at_ms == item.at_ms
            ):
                last.events.append(pair)  # the same batch window
            else:
                out.append(Message(item.at_ms, item.node, events=[pair]))
        return out


def reading(estimate: Any) -> Reading:
    position = getattr(estimate, "position", None)
    return Reading(
        estimate.room,
        estimate.floor,
        None if position is None else (position.floor, position.x, position.y),
    )


def score(recording: Recording, name: str, readings: Sequence[Sequence[Reading]]) -> LocatorScore:
    """The harness's scores of readings taken at each recorded second (one per tag, in the
    recording's tag order)."""
    assert len(readings) == len(recording.seconds), (len(readings), len(recording.seconds))
    scenario = recording.scenario
    out = LocatorScore(name, None)
    for second, row in zip(recording.seconds, readings, strict=True):
        t = second.t_ms
        uncovered: set[str] | None = None
        if second.offline:
            uncovered = set(scenario.rooms)
            for outage in scenario.outages:
                if outage.node in second.offline:
                    uncovered -= outage.covers
        for tag, got in zip(recording.tags, row, strict=True):
            pose = tag.walk.at(t / 1000)
            room = scenario.room_at(pose.floor, pose.x, pose.y)
            recording._score(
                out,
                tag.asset_id,
                pose.floor,
                room,
                got.room,
                got.floor,
                t,
                second.scored,
                uncovered,
            )
            if second.scored and got.position is not None and got.position[0] == pose.floor:
                out.position_errors.append(
                    math.hypot(got.position[1] - pose.x, got.position[2] - pose.y)
                )
    return out


def figures(recording: Recording, scores: Mapping[str, LocatorScore]) -> dict[str, Any]:
    """The harness's figures of these scores (as in report.json's `locators`)."""
    kept = recording.scores
    recording.scores = dict(scores)
    try:
        result = recording.result(0.0)
    finally:
        recording.scores = kept
    out = result["locators"]
    for found in out.values():
        for key in ("cpu_s", "cpu_s_per_tag_second", "settings"):
            found.pop(key, None)
    return dict(out)


def agreement(a: Sequence[Sequence[Reading]], b: Sequence[Sequence[Reading]]) -> dict[str, Any]:
    """How often two sets of readings name the same room (and floor), over all tag-seconds, and
    the first few seconds where they differ."""
    ticks = same_room = same_floor = 0
    differing: list[int] = []
    for i, (row_a, row_b) in enumerate(zip(a, b, strict=True)):
        for x, y in zip(row_a, row_b, strict=True):
            ticks += 1
            same_room += x.room == y.room
            same_floor += x.floor == y.floor
            if x.room != y.room and len(differing) < 20:
                differing.append(i)
    return {
        "tag_seconds": ticks,
        "same_room_pct": None if not ticks else round(100 * same_room / ticks, 2),
        "same_floor_pct": None if not ticks else round(100 * same_floor / ticks, 2),
        "first_differing_seconds": differing,
    }


__all__ = ["START_MS", "Message", "Reading", "Recording", "agreement", "figures", "score"]
