"""Which room, and which floor, an asset is in: a filter over rooms fed by every node's view.

Nearest-scanner rules (the strongest node wins past a dB margin) flap between two rooms at the
boundary, stick in the wrong room until the margin is beaten, cannot name a room without a node
and move every asset of a node that goes offline. Instead each asset keeps a probability per room:
- evidence: every node that heard the asset recently scores each room, on one dB scale (a room's
  node should be the strongest by a margin; a trained room's fingerprint should match the shape of
  what the nodes hear, whatever the tag's transmit power);
- time: evidence pulls the probabilities at a rate, so how often the estimate is asked changes
  nothing, and a room can only be left at a rate that falls the longer the asset stayed (dwell
  makes it sticky) and that favours adjacent rooms;
- nodes: each node's radio bias is learned from what it hears, and an offline node's room keeps
  its claim unless another node hears the asset close by.
The reported room changes only when another room holds a clear majority, so a tag on a boundary
stays where it is reported.

Pure Python, no Home Assistant imports: the accuracy harness runs this very module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from .radio_map import Position, RadioMap, TagOffset

UNHEARD_DBM = -105.0  # what a node that does not hear an asset is taken to hear
OFFSET_LIMIT_DB = 10.0
MIN_TRAINING = 10
NEAREST_SAMPLES = 5
SETTLED = 0.98
TX_MEMORY = 200  # reports a tag's learned transmit power averages over
BIAS_MEMORY = 2000  # confident fits a node's bias on a floor plan averages over


@dataclass(frozen=True, slots=True)
class Room:
    """A place an asset can be: a Home Assistant area, its floor and the nodes inside it."""

    room_id: str
    floor: str | None
    nodes: tuple[str, ...]
    adjacent: frozenset[str] = frozenset()  # empty: unknown, every room is reachable


@dataclass(frozen=True, slots=True)
class Estimate:
    """Where an asset is, how sure the estimator is, and since when it has said so."""

    room: str | None
    floor: str | None
    confidence: float
    since_ms: int
    settled: bool = True  # False while another room gains: asking again soon may move it
    position: Position | None = None  # with a floor plan: where in the room


@dataclass(frozen=True, slots=True)
class LocatorSettings:
    """The estimator's constants; defaults are the accuracy harness's best (docs/accuracy.md)."""

    fresh_s: float = 40.0  # an observation older than this says nothing any more
    temperature_db: float = 1.5  # a score 1.5 dB better pulls e-fold per evidence time constant
    evidence_s: float = 1.0
    margin_db: float = 6.0  # near a node, it beats the others by this much
    far_dbm: float = -75.0  # weaker is not "close": an offline room keeps its claim
    fingerprint_db: float = 1.0  # weight of a trained room's shape mismatch (per dB RMS)
    fingerprint_bonus_db: float = 3.0  # a perfect match scores this far above a node's room
    stay_db: float = 0.5  # the reported room's head start in the evidence ...
    stay_per_min_db: float = 0.5  # ... growing with each minute the asset stayed there ...
    stay_max_db: float = 3.0  # ... up to this
    move_s: float = 3.0  # base time constant to leave a room
    dwell_s: float = 60.0  # each dwell_s spent in a room doubles the time constant, up to a cap
    max_move_s: float = 30.0
    switch_at: float = 0.75  # a new room is reported once it holds this share
    hold_s: float = 0.0  # ... for this long
    calibrate: bool = True  # learn each node's radio bias from what it hears
    offset_quantile: float = 0.9
    offset_after: int = 300  # samples per node before its bias is trusted
    # on a floor plan, learn node biases from the map's residuals: off, as model errors (wall
    # losses, exponent) end up in them too (-0.4 points in the harness); a calibration sets them
    map_calibrate: bool = False
    tx_sigma_min_db: float = 1.0  # how firmly a tag's learned transmit power is held
    map_weight: float = 1.0  # with a floor plan: dB of score per unit of log-likelihood, per dB
    # with a floor plan: positions from the whole floor's fit, moved into the reported room
    floor_fit: bool = True
    # with a floor plan, a trained room's fingerprint counts too: it holds what the map cannot
    # know there (the shadowing of that spot); dB of score per dB of RMS mismatch below the level
    plan_fingerprint_db: float = 1.0
    plan_fingerprint_level_db: float = 5.0


@dataclass(slots=True)
class Fingerprint:
    """What the nodes heard while an asset stood in a room, each sample relative to its own mean
    (so another tag's transmit power does not matter); matched by its nearest samples, so a room
    whose corners sound different is still one room."""

    nodes: tuple[str, ...]
    samples: list[tuple[float, ...]]

    @classmethod
    def of(cls, samples: Sequence[Mapping[str, float]], nodes: Iterable[str]) -> Fingerprint:
        names = tuple(sorted(set(nodes)))
        return cls(names, [_centred(s, names) for s in samples])

    def mismatch(self, heard: Mapping[str, float]) -> float:
        """RMS dB to the nearest few training samples."""
        obs = _centred(heard, self.nodes)
        distances = sorted(
            sum((a - b) ** 2 for a, b in zip(obs, sample, strict=True)) for sample in self.samples
        )
        nearest = distances[:NEAREST_SAMPLES] or [0.0]
        return math.sqrt(fmean(nearest) / max(1, len(self.nodes)))

    def as_dict(self) -> dict[str, Any]:
        return {"nodes": list(self.nodes), "samples": [list(s) for s in self.samples]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Fingerprint | None:
        nodes = tuple(str(n) for n in raw.get("nodes") or ())
        samples = [tuple(float(v) for v in s) for s in raw.get("samples") or ()]
        if not nodes or len(samples) < MIN_TRAINING or any(len(s) != len(nodes) for s in samples):
            return None
        return cls(nodes, samples)


@dataclass(slots=True)
class _Asset:
    heard: dict[str, tuple[float, int]] = field(default_factory=dict)  # node -> (dBm, at_ms)
    belief: dict[str, float] = field(default_factory=dict)
    at_ms: int | None = None
    room: str | None = None
    since_ms: int = 0
    leader: str | None = None  # the room with the best score at the last evidence
    candidate: tuple[str | None, int] = (None, 0)  # a room leading since when
    scored: tuple[tuple[Any, ...], dict[str, float], str] | None = None
    tx_db: float = 0.0  # with a floor plan: the tag's learned transmit power offset
    tx_samples: int = 0
    # with a floor plan: the report last placed on its floor, and where
    fixed: tuple[tuple[tuple[str, float], ...], Position | None] = ((), None)


@dataclass(slots=True)
class _Node:
    online: bool = True
    high: float | None = None  # a high quantile of what the node hears (for its bias)
    samples: int = 0
    map_bias: float = 0.0  # on a floor plan: what it hears above the map, over confident fits
    map_samples: int = 0


class Locator:
    """Room and floor per asset from the smoothed signal every node reports for it."""

    def __init__(self, rooms: Iterable[Room], settings: LocatorSettings | None = None) -> None:
        self.settings = settings or LocatorSettings()
        self._assets: dict[str, _Asset] = {}
        self._nodes: dict[str, _Node] = {}
        self._fingerprints: dict[str, Fingerprint] = {}
        self._map: RadioMap | None = None
        self._version = 0  # rooms or fingerprints changed: earlier scores are void
        self.set_rooms(rooms)

    # what the estimator knows of the place

    def set_rooms(self, rooms: Iterable[Room]) -> None:
        """The rooms changed (areas renamed, nodes moved): beliefs in vanished rooms are dropped."""
        self._version += 1
        self.rooms = {r.room_id: r for r in rooms}
        self._room_of_node = {n: r.room_id for r in self.rooms.values() for n in r.nodes}
        for state in self._assets.values():
            state.belief = {k: v for k, v in state.belief.items() if k in self.rooms}
            if state.room not in self.rooms:
                state.room = None

    def set_map(self, radio_map: RadioMap | None) -> None:
        """A floor plan's radio map (`radio_map.py`): the rooms on it are scored by how well what
        the nodes hear fits it, and located assets get a position in their room."""
        self._map = radio_map
        self._version += 1

    @property
    def radio_map(self) -> RadioMap | None:
        return self._map

    def train(self, room: str, samples: Sequence[Mapping[str, float]]) -> None:
        """A room's fingerprint from vectors of what the nodes heard while an asset stood in it."""
        if room not in self.rooms:
            raise KeyError(room)
        if len(samples) < MIN_TRAINING:
            raise ValueError(f"{len(samples)} samples; at least {MIN_TRAINING} are needed")
        nodes = {n for s in samples for n in s} | set(self._room_of_node)
        calibrated = [{n: v - self.offset(n) for n, v in s.items()} for s in samples]
        self._fingerprints[room] = Fingerprint.of(calibrated, nodes)
        self._version += 1

    @property
    def trained(self) -> tuple[str, ...]:
        return tuple(sorted(self._fingerprints))

    def offset(self, node: str) -> float:
        """The node's learned radio bias in dB (0 until it has heard enough)."""
        state = self._nodes.get(node)
        if self._map is not None:
            return self._map_offset(state)
        if (
            not self.settings.calibrate
            or state is None
            or state.high is None
            or state.samples < self.settings.offset_after
        ):
            return 0.0
        trusted = [
            s.high
            for s in self._nodes.values()
            if s.high is not None and s.samples >= self.settings.offset_after
        ]
        if len(trusted) < 2:
            return 0.0
        reference = sorted(trusted)[len(trusted) // 2]
        return max(-OFFSET_LIMIT_DB, min(OFFSET_LIMIT_DB, state.high - reference))

    # what the nodes say

    def observe(self, asset: str, node: str, rssi: float, at_ms: int) -> None:
        state = self._assets.setdefault(asset, _Asset())
        previous = state.heard.get(node)
        if previous is None or at_ms >= previous[1]:
            state.heard[node] = (rssi, at_ms)
            if previous != (rssi, at_ms):  # the same report given again teaches nothing
                self._learn_bias(node, rssi)

    def lost(self, asset: str, node: str, at_ms: int) -> None:
        """The node says the asset is away from it."""
        state = self._assets.get(asset)
        if state is not None:
            heard = state.heard.get(node)
            if heard is not None and heard[1] <= at_ms:
                del state.heard[node]

    def node_online(self, node: str, online: bool, at_ms: int) -> None:
        self._nodes.setdefault(node, _Node()).online = online
        self._version += 1

    def forget(self, asset: str) -> None:
        self._assets.pop(asset, None)

    def correct(self, asset: str, room: str, now_ms: int) -> None:
        """The user says the asset is in `room` now."""
        if room not in self.rooms:
            raise KeyError(room)
        state = self._assets.setdefault(asset, _Asset())
        state.belief = {room: 1.0}
        state.at_ms = now_ms
        if state.room != room:
            state.room, state.since_ms = room, now_ms

    # the answer

    def locate(self, asset: str, now_ms: int) -> Estimate:
        """Where the asset is at now_ms (None room when no node has heard it recently)."""
        state = self._assets.get(asset)
        if state is None or not self.rooms:
            return Estimate(None, None, 0.0, now_ms)
        heard = self._fresh(state, now_ms)
        if not heard and not self._held_by_offline(state):
            if state.room is not None:
                state.room, state.since_ms, state.belief = None, now_ms, {}
            return Estimate(None, None, 0.0, state.since_ms)
        if heard:
            self._advance(state, heard, now_ms)
        settled = True
        if state.belief:
            best = max(state.belief, key=lambda r: (state.belief[r], r))
            leads = best != state.room and state.belief[best] >= self.settings.switch_at
            if not leads or best != state.candidate[0]:
                state.candidate = (best, now_ms) if leads else (None, now_ms)
            held = now_ms - state.candidate[1] >= self.settings.hold_s * 1000
            if state.room is None or (leads and held):
                state.room, state.since_ms = best, now_ms
            # the evidence may not have pulled yet (asked at the moment it came): not settled
            # while another room has the better score
            settled = state.belief.get(state.room or "", 0.0) >= SETTLED and (
                state.leader in (None, state.room)
            )
        room = state.room
        if room is None:
            return Estimate(None, None, 0.0, state.since_ms)
        confidence = state.belief.get(room, 0.0)
        position = None
        if self._map is not None and heard and self._map.covers(room):
            position = self._position(state, room, heard, now_ms)
        return Estimate(room, self.rooms[room].floor, confidence, state.since_ms, settled, position)

    def _position(
        self, state: _Asset, room: str, heard: Mapping[str, float], now_ms: int
    ) -> Position | None:
        """Where the report fits best on the room's floor, moved into the room if it lies out.
        The room changes later than the signal on purpose (a room must lead for a while); the
        fit over the whole floor keeps an asset crossing a doorway next to it, where a fit
        within the room alone puts it in the room's middle."""
        assert self._map is not None
        online, tx = self._online_map(), self._tx(state)
        if not self.settings.floor_fit:
            return self._map.position(room, heard, online, tx)
        floor = self._map.rooms[room].floor
        key = tuple(sorted(heard.items()))
        fix = state.fixed[1]
        if key != state.fixed[0] or fix is None or fix.floor != floor:
            fix = self._map.floor_position(floor, heard, online, tx)
            state.fixed = (key, fix)
        if fix is None:
            return None
        x, y = self._map.within(room, fix.x, fix.y)
        moved = math.hypot(x - fix.x, y - fix.y)
        return Position(x, y, floor, max(fix.accuracy_m, moved))

    def knows(self, asset: str) -> bool:
        """Whether any node has reported the asset since the estimator started."""
        return asset in self._assets

    def heard(self, asset: str, now_ms: int) -> dict[str, float]:
        """What the online nodes heard of the asset recently, as they reported it (dBm)."""
        state = self._assets.get(asset)
        if state is None:
            return {}
        fresh = self._fresh(state, now_ms)
        return {node: value + self.offset(node) for node, value in fresh.items()}

    def fingerprints(self) -> dict[str, dict[str, Any]]:
        """The trained rooms, to be stored."""
        return {room: f.as_dict() for room, f in self._fingerprints.items()}

    def load_fingerprints(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        """Trained rooms from the store; a room that is no longer known is kept for later."""
        for room, raw in data.items():
            fingerprint = Fingerprint.from_dict(raw)
            if fingerprint is not None:
                self._fingerprints[room] = fingerprint
        self._version += 1

    def _fresh(self, state: _Asset, now_ms: int) -> dict[str, float]:
        """Calibrated dBm of the online nodes that heard the asset recently."""
        limit = self.settings.fresh_s * 1000
        return {
            node: rssi - self.offset(node)
            for node, (rssi, at) in state.heard.items()
            if now_ms - at <= limit and self._nodes.get(node, _Node()).online
        }

    def _held_by_offline(self, state: _Asset) -> bool:
        """The asset's room has a node that went offline: its claim stands until others object."""
        if state.room is None:
            return False
        nodes = self.rooms[state.room].nodes
        return bool(nodes) and all(not self._nodes.get(n, _Node()).online for n in nodes)

    def _advance(self, state: _Asset, heard: Mapping[str, float], now_ms: int) -> None:
        # the same evidence scores the same: asked again while nothing new came, reuse it
        key = (self._version, *sorted((n, round(v * 2)) for n, v in heard.items()))
        if state.scored is None or state.scored[0] != key:
            scores = self.scores(heard, state)
            state.scored = (key, scores, max(scores, key=lambda r: (scores[r], r)))
        _key, scores, state.leader = state.scored
        top = scores[state.leader]
        if not state.belief:
            # the first word: the evidence alone, as if it had pulled for one time constant
            state.belief = dict.fromkeys(self.rooms, 1.0)
            dt, pull = 0.0, 1.0 / self.settings.temperature_db
        else:
            dt = max(0.0, (now_ms - (state.at_ms or now_ms)) / 1000)
            pull = dt / self.settings.evidence_s / self.settings.temperature_db
        state.at_ms = now_ms
        if dt > 0.0:
            self._move(state, dt, now_ms)
        elif pull == 0.0:
            return
        stay = self._stay_db(state, now_ms)
        weights = {
            r: p * math.exp(pull * (scores[r] + (stay if r == state.room else 0.0) - top))
            for r, p in state.belief.items()
            if p > 0
        }
        total = sum(weights.values()) or 1.0
        state.belief = {r: w / total for r, w in weights.items() if w / total > 1e-9}

    def _stay_db(self, state: _Asset, now_ms: int) -> float:
        """The reported room's head start in dB, growing with the time the asset stayed there."""
        if state.room is None:
            return 0.0
        s = self.settings
        minutes = (now_ms - state.since_ms) / 60_000
        return min(s.stay_max_db, s.stay_db + s.stay_per_min_db * minutes)

    def _move(self, state: _Asset, dt: float, now_ms: int) -> None:
        """Probability leaks out of each room at a rate that falls with the dwell there."""
        s = self.settings
        dwell = (now_ms - state.since_ms) / 1000 if state.room is not None else 0.0
        tau = min(s.max_move_s, s.move_s * 2 ** (dwell / s.dwell_s))
        leave = 1.0 - math.exp(-dt / tau)
        moved: dict[str, float] = dict.fromkeys(self.rooms, 0.0)
        for room, p in state.belief.items():
            targets = self._reachable(room)
            moved[room] += p * (1.0 - leave)
            for target in targets:
                moved[target] += p * leave / len(targets)
        state.belief = moved

    def _reachable(self, room: str) -> list[str]:
        adjacent = [r for r in self.rooms[room].adjacent if r in self.rooms and r != room]
        return adjacent or [r for r in self.rooms if r != room] or [room]

    def scores(self, heard: Mapping[str, float], state: _Asset | None = None) -> dict[str, float]:
        """Each room's evidence in dB, 0 for a perfect fit; more negative is less likely."""
        top = sorted(heard.values(), reverse=True)
        gap = top[0] - (top[1] if len(top) > 1 else UNHEARD_DBM)
        on_map = self._map if self._map is not None and self._map.hears(heard) else None
        mapped = on_map.covers if on_map is not None else None
        scores = {
            room: self._score(room, heard, top[0], gap)
            for room in self.rooms
            if mapped is None or not mapped(room)
        }
        if on_map is not None:
            fit = on_map.fit(heard, self._online_map(), self._tx(state))
            known = {r: v for r, v in fit.rooms.items() if r in self.rooms}
            if known:
                best = max(known.values())
                scale = self.settings.map_weight * self.settings.temperature_db
                scores.update({r: scale * (v - best) for r, v in known.items()})
                self._add_fingerprints(scores, known, heard)
            if state is not None:
                self._learn_tx(state, fit.offset_db)
                if state.belief.get(state.room or "", 0.0) >= SETTLED:
                    self._learn_map_bias(fit.residuals)
        return scores

    def _add_fingerprints(
        self, scores: dict[str, float], rooms: Iterable[str], heard: Mapping[str, float]
    ) -> None:
        """On a floor plan: a trained room scores better the closer the report is to what the
        user recorded there, worse when it is far from it."""
        s = self.settings
        for room in rooms:
            fingerprint = self._fingerprints.get(room)
            if fingerprint is not None:
                mismatch = fingerprint.mismatch(heard)
                scores[room] += s.plan_fingerprint_db * (s.plan_fingerprint_level_db - mismatch)

    def _map_offset(self, state: _Node | None) -> float:
        """On a floor plan: the node's bias against the map, relative to the others' (a common
        shift of every node is a tag's transmit power, not a bias)."""
        s = self.settings
        if not s.map_calibrate or state is None or state.map_samples < s.offset_after:
            return 0.0
        trusted = [n.map_bias for n in self._nodes.values() if n.map_samples >= s.offset_after]
        if len(trusted) < 2:
            return 0.0
        return max(-OFFSET_LIMIT_DB, min(OFFSET_LIMIT_DB, state.map_bias - fmean(trusted)))

    def _learn_map_bias(self, residuals: Mapping[str, float]) -> None:
        for node, residual in residuals.items():
            state = self._nodes.setdefault(node, _Node())
            state.map_samples += 1
            state.map_bias += residual / min(state.map_samples, BIAS_MEMORY)

    def _tx(self, state: _Asset | None) -> TagOffset:
        """The tag's transmit power as learned so far: vague at first, firmer with each report."""
        from_map = self._map.model.offset_sigma_db if self._map is not None else 4.0
        if state is None:
            return TagOffset(0.0, from_map)
        sigma = max(self.settings.tx_sigma_min_db, from_map / math.sqrt(1 + state.tx_samples / 20))
        return TagOffset(state.tx_db, sigma)

    def _learn_tx(self, state: _Asset, offset_db: float) -> None:
        state.tx_samples += 1
        state.tx_db += (offset_db - state.tx_db) / min(state.tx_samples, TX_MEMORY)

    def _online_map(self) -> dict[str, bool]:
        return {node: state.online for node, state in self._nodes.items()}

    def _score(
        self, room_id: str, heard: Mapping[str, float], strongest: float, gap: float
    ) -> float:
        s = self.settings
        fingerprint = self._fingerprints.get(room_id)
        if fingerprint is not None:
            # a close match beats the strongest node's own room: the user said what it sounds like
            return s.fingerprint_bonus_db - s.fingerprint_db * fingerprint.mismatch(heard)
        nodes = self.rooms[room_id].nodes
        online = [n for n in nodes if self._nodes.get(n, _Node()).online]
        if nodes and not online:
            # nobody can hear for this room: it is as likely as the others are unconvincing
            return -max(0.0, strongest - s.far_dbm)
        if not online:
            return -2.0 * s.margin_db - 20.0  # a room without node nor training: only by moving
        # an unclear picture (the two strongest nodes close) leaves room for a trained room
        unclear = max(0.0, s.margin_db - gap)
        return max(heard.get(n, UNHEARD_DBM) for n in online) - strongest - unclear

    def _learn_bias(self, node: str, rssi: float) -> None:
        """A stochastic high-quantile of what the node hears: every node hears tags close by."""
        state = self._nodes.setdefault(node, _Node())
        state.samples += 1
        if state.high is None:
            state.high = rssi
            return
        q, step = self.settings.offset_quantile, 0.2 + 20.0 / state.samples
        state.high += step * (q if rssi > state.high else q - 1.0)


def _centred(heard: Mapping[str, float], nodes: Sequence[str]) -> tuple[float, ...]:
    values = [heard.get(n, UNHEARD_DBM) for n in nodes]
    mean = fmean(values) if values else 0.0
    return tuple(v - mean for v in values)
