"""`oracle`: what the radio lets any locator reach, measured on the same data as the others.

It is told what no real locator knows: the radio map the harness draws from (every node's path
loss, walls, floors, the spatially correlated shadowing and each node's receiver bias) at every
spot of the integration's floor-plan grid (`radio_map.py`), and the tag's usual transmit power. It receives only what the others
receive (each node's smoothed RSSI as the edge reported it) and does a Bayesian filter over rooms:
each room's likelihood is the integration's own fit (`RadioMap.fit`) against the true means,
and probability moves only to adjacent rooms. What it gets wrong is lost between the radio and the
reports (fading, bodies, multipath, the edge's smoothing and send-on-delta), not in modelling.
Its positions are placed as the integration places them (the floor's fit on the true map, moved
into the reported room). A ceiling to read the others against, not a locator that could ship.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .radio import RadioModel
from .scenario import Scenario, adjacency
from .walk import Pose

SIGMA_DB = 4.0  # what is left between the true mean and a report: smoothed fading, bodies
FRESH_MS = 40_000
MOVE_S = 20.0  # mean time in a room before moving to an adjacent one
EVIDENCE_S = 1.0  # a report pulls e-fold per second it stands (the best of 0.5-8 s)
TX_POWER = -59.0


@dataclass(frozen=True, slots=True)
class Estimate:
    room: str | None
    floor: str | None
    confidence: float
    since_ms: int
    settled: bool = True
    position: Any = None


@dataclass(slots=True)
class _Asset:
    heard: dict[str, tuple[float, int]] = field(default_factory=dict)
    belief: dict[str, float] = field(default_factory=dict)
    at_ms: int | None = None
    room: str | None = None
    since_ms: int = 0
    cached: tuple[Any, dict[str, float]] | None = None


class OracleLocator:
    name = "oracle"

    def __init__(self, scenario: Scenario, seed: int) -> None:
        from .baselines import floor_plan, integration_module

        self._scenario = scenario
        module = integration_module("radio_map")
        model = module.RadioModel(ref_dbm=TX_POWER, sigma_db=SIGMA_DB)
        self._map = module.RadioMap(floor_plan(scenario, module, model))
        radio = RadioModel(scenario, seed)
        height = 1.0
        true_means = {}
        for room in scenario.rooms.values():
            z = scenario.floors[room.floor].height + height
            true_means[room.id] = np.array(
                [
                    [
                        radio.mean_rssi(TX_POWER, Pose(x, y, room.floor, z, None, False), node)
                        for node in scenario.nodes.values()
                    ]
                    for x, y in self._map.spots[room.id]
                ]
            )
        self._map.replace_means(true_means)
        self._adjacent = adjacency(scenario)
        self._online = dict.fromkeys(scenario.nodes, True)
        self._assets: dict[str, _Asset] = {}

    def settings(self) -> dict[str, Any]:
        return {
            "sigma_db": SIGMA_DB,
            "move_s": MOVE_S,
            "evidence_s": EVIDENCE_S,
            "tx_power": TX_POWER,
        }

    def observe(self, asset: str, node: str, rssi: float, at_ms: int) -> None:
        state = self._assets.setdefault(asset, _Asset())
        previous = state.heard.get(node)
        if previous is None or at_ms >= previous[1]:
            state.heard[node] = (rssi, at_ms)

    def lost(self, asset: str, node: str, at_ms: int) -> None:
        state = self._assets.get(asset)
        if state is not None and node in state.heard and state.heard[node][1] <= at_ms:
            del state.heard[node]

    def node_online(self, node: str, online: bool, at_ms: int) -> None:
        self._online[node] = online

    def train(self, room: str, samples: Any) -> None:
        return None  # it knows every room already

    def correct(self, asset: str, room: str, now_ms: int) -> None:
        return None

    def locate(self, asset: str, now_ms: int) -> Estimate:
        state = self._assets.get(asset)
        heard = self._fresh(state, now_ms) if state is not None else {}
        if state is None or not heard:
            return Estimate(None, None, 0.0, now_ms)
        loglik = self._likelihood(state, heard)
        if not state.belief:
            state.belief = _normalised(
                {r: math.exp(v - max(loglik.values())) for r, v in loglik.items()}
            )
        else:
            dt = max(0.0, (now_ms - (state.at_ms or now_ms)) / 1000)
            self._move(state, dt)
            top = max(loglik.values())
            weight = dt / EVIDENCE_S
            state.belief = _normalised(
                {r: p * math.exp(weight * (loglik[r] - top)) for r, p in state.belief.items()}
            )
        state.at_ms = now_ms
        best = max(state.belief, key=lambda r: state.belief[r])
        if best != state.room:
            state.room, state.since_ms = best, now_ms
        room = self._scenario.rooms[best]
        position = self._position(best, room.floor, heard)
        return Estimate(best, room.floor, state.belief[best], state.since_ms, True, position)

    def _position(self, room: str, floor: str, heard: dict[str, float]) -> Any:
        """Placed as the integration places: the whole floor's fit, moved into the room."""
        fix = self._map.floor_position(floor, heard, self._online)
        if fix is None:
            return None
        x, y = self._map.within(room, fix.x, fix.y)
        return type(fix)(x, y, floor, fix.accuracy_m)

    def _fresh(self, state: _Asset, now_ms: int) -> dict[str, float]:
        return {
            node: rssi
            for node, (rssi, at) in state.heard.items()
            if now_ms - at <= FRESH_MS and self._online.get(node, True)
        }

    def _likelihood(self, state: _Asset, heard: dict[str, float]) -> dict[str, float]:
        key = tuple(sorted(heard.items())), tuple(sorted(self._online.items()))
        if state.cached is None or state.cached[0] != key:
            state.cached = (key, self._map.fit(heard, self._online).rooms)
        return state.cached[1]

    def _move(self, state: _Asset, dt: float) -> None:
        leave = 1.0 - math.exp(-dt / MOVE_S)
        moved = dict.fromkeys(self._scenario.rooms, 0.0)
        for room, p in state.belief.items():
            targets = [r for r in self._adjacent[room] if r in moved] or [room]
            moved[room] += p * (1.0 - leave)
            for target in targets:
                moved[target] += p * leave / len(targets)
        state.belief = moved


def _normalised(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values()) or 1.0
    return {r: w / total for r, w in weights.items()}
