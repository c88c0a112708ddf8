"""The radio model: what RSSI each node hears from each advert, deterministic per seed.

mean RSSI = tx power at 1 m - 10 n log10(d) - walls crossed - floors between - node bias
            + shadowing(node, position)
one advert = mean + fast fading (gaussian per advert) - multipath burst (some adverts)
             - body shadowing (while carried, toward nodes behind the person, in episodes)
An advert is lost with `advert_loss` probability per node, or when below the sensitivity.

Shadowing is a smooth random field per node and floor: a sum of random Fourier features (a
gaussian process with a squared-exponential correlation of length `correlation_m`) scaled to
`sigma_db`; the same spot always has the same shadowing for a node, nearby spots similar.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .scenario import NodeSpec, Scenario, segments_cross
from .walk import Pose

FEATURES = 48
CELL_M = 0.25  # static losses are cached on a grid this fine (the fields vary over metres)
BEHIND_COS = -0.3  # a node is behind the person when it is this far off the heading


@dataclass(slots=True)
class _Field:
    """Random Fourier features of one node on one floor."""

    wx: list[float]
    wy: list[float]
    phase: list[float]
    scale: float

    def value(self, x: float, y: float) -> float:
        cos = math.cos
        return self.scale * sum(
            cos(a * x + b * y + c) for a, b, c in zip(self.wx, self.wy, self.phase, strict=True)
        )


class RadioModel:
    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        radio = scenario.radio
        self.exponent = float(radio["path_loss_exponent"])
        self.floor_db = float(radio["floor_db"])
        self.sigma = float(radio["shadowing"]["sigma_db"])
        self.correlation = float(radio["shadowing"]["correlation_m"])
        self.fading = float(radio["fading_sigma_db"])
        self.multipath_p = float(radio["multipath"]["probability"])
        self.multipath_db = float(radio["multipath"]["loss_db"])
        self.body_db = float(radio["body"]["loss_db"])
        self.body_p = float(radio["body"]["probability"])
        self.body_period = float(radio["body"]["period_s"])
        self.loss = float(radio["advert_loss"])
        self.sensitivity = float(radio["sensitivity_dbm"])
        self.levels = {f.id: f.level for f in scenario.floors.values()}
        self._fields: dict[tuple[str, str], _Field] = {}
        self._static: dict[tuple[str, str, int, int], float] = {}
        self._body: dict[str, tuple[int, bool]] = {}
        self._walls: dict[str, list[tuple[tuple[float, float], tuple[float, float], float]]] = {}
        for wall in scenario.walls:
            self._walls.setdefault(wall.floor, []).append((wall.a, wall.b, wall.attenuation_db))

    # the mean -----------------------------------------------------------------------------------

    def shadow_field(self, node: str, floor: str) -> _Field:
        key = (node, floor)
        found = self._fields.get(key)
        if found is None:
            rng = random.Random(f"shadow:{self.seed}:{node}:{floor}")
            k = 1.0 / self.correlation
            found = _Field(
                [rng.gauss(0, k) for _ in range(FEATURES)],
                [rng.gauss(0, k) for _ in range(FEATURES)],
                [rng.uniform(0, 2 * math.pi) for _ in range(FEATURES)],
                self.sigma * math.sqrt(2.0 / FEATURES),
            )
            self._fields[key] = found
        return found

    def shadowing(self, node: str, floor: str, x: float, y: float) -> float:
        if self.sigma == 0:
            return 0.0
        return self.shadow_field(node, floor).value(x, y)

    def wall_loss(self, node: NodeSpec, floor: str, x: float, y: float) -> float:
        """Walls crossed by the straight line to the node, on the tag's floor (and the node's)."""
        loss = 0.0
        a, b = (x, y), (node.x, node.y)
        floors = {floor, node.floor}
        for f in floors:
            for c, d, db in self._walls.get(f, ()):
                if segments_cross(a, b, c, d):
                    loss += db if len(floors) == 1 else db / 2
        return loss

    def static_loss(self, node: NodeSpec, floor: str, x: float, y: float) -> float:
        """Everything but the distance: walls, floors, shadowing and the node's own bias (dB)."""
        i, j = math.floor(x / CELL_M), math.floor(y / CELL_M)
        key = (node.id, floor, i, j)
        found = self._static.get(key)
        if found is None:
            cx, cy = (i + 0.5) * CELL_M, (j + 0.5) * CELL_M
            found = (
                self.wall_loss(node, floor, cx, cy)
                + self.floor_db * abs(self.levels[floor] - self.levels[node.floor])
                - self.shadowing(node.id, floor, cx, cy)
                - node.offset_db
            )
            self._static[key] = found
        return found

    def node_z(self, node: NodeSpec) -> float:
        return self.scenario.floors[node.floor].height + node.height

    def mean_rssi(self, tx_power: float, pose: Pose, node: NodeSpec) -> float:
        dx, dy, dz = pose.x - node.x, pose.y - node.y, pose.z - self.node_z(node)
        d = max(0.1, math.sqrt(dx * dx + dy * dy + dz * dz))
        return (
            tx_power
            - 10 * self.exponent * math.log10(d)
            - self.static_loss(node, pose.floor, pose.x, pose.y)
        )

    # one advert ---------------------------------------------------------------------------------

    def body_loss(self, tag: str, carried: bool, pose: Pose, node: NodeSpec, t: float) -> float:
        """While a person carries the tag, in some periods, toward nodes behind them."""
        if not carried or self.body_db == 0 or pose.heading is None:
            return 0.0
        episode = int(t // self.body_period)
        known = self._body.get(tag)
        if known is None or known[0] != episode:
            on = random.Random(f"body:{self.seed}:{tag}:{episode}").random() < self.body_p
            known = self._body[tag] = (episode, on)
        if not known[1]:
            return 0.0
        dx, dy = node.x - pose.x, node.y - pose.y
        d = math.hypot(dx, dy)
        if d < 0.01:
            return 0.0
        cos = (dx * math.cos(pose.heading) + dy * math.sin(pose.heading)) / d
        if cos > BEHIND_COS:
            return 0.0
        return self.body_db * min(1.0, (BEHIND_COS - cos) / (1 + BEHIND_COS))

    def advert_rssi(
        self,
        rng: random.Random,
        tag: str,
        tx_power: float,
        carried: bool,
        pose: Pose,
        node: NodeSpec,
        t: float,
    ) -> int | None:
        """The RSSI the node reports for one advert, or None when it does not hear it."""
        if self.loss and rng.random() < self.loss:
            return None
        rssi = self.mean_rssi(tx_power, pose, node)
        if self.fading:
            rssi += rng.gauss(0, self.fading)
        if self.multipath_p and rng.random() < self.multipath_p:
            rssi -= self.multipath_db
        rssi -= self.body_loss(tag, carried, pose, node, t)
        if rssi < self.sensitivity:
            return None
        return round(max(-127.0, min(20.0, rssi)))
