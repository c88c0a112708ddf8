"""What each node should hear from each spot of a floor plan, and how well a report fits a room.

With a floor plan (node positions, room outlines, floor elevations, all in metres) the estimator
need not guess a room from which node is loudest: every room is a grid of spots, each spot has the
signal each node should hear from there (log-distance path loss, a loss per wall crossed - the
rooms' outlines are the walls - and per floor), and a report of what the nodes heard fits a room
as well as it fits the spots in it. A tag's own transmit power is not known, so the fit allows
each spot a common offset of all the node readings (shrunk toward none). Nodes that did not hear
the asset although a spot is loud for them count against that spot.

The same map gives a position: the spots of the reported room weighted by their fit, so a
position never lies in a room the estimator rejects.

Pure Python and numpy, no Home Assistant imports: the accuracy harness runs this very module.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

MAX_SPOTS = 80  # per room: a large room gets a coarser grid, so cost does not grow with area
MIN_SPACING_M = 0.5
# a spot where the loudest node should hear the tag this much weaker than it did is not fitted
PLAUSIBLE_DB = 25.0
EDGE_INSET_M = 0.05
# A spot's weight in a position is its likelihood tempered by this: the likelihood counts only the
# report's own noise (`sigma_db`), but between the map and a report there is also the shadowing no
# map knows, so as sharp a posterior would pull a position to one lucky spot. 2 is as if sigma
# were sqrt(2) x 4 = 5.7 dB (docs/accuracy.md, "Positions weigh the spots less sharply").
POSITION_TEMPERATURE = 2.0


@dataclass(frozen=True, slots=True)
class PlanNode:
    node_id: str
    floor: str
    x: float
    y: float
    height: float = 1.5  # above its floor
    offset_db: float = 0.0  # the node's receiver hears this much louder than the model (calibrated)


@dataclass(frozen=True, slots=True)
class PlanRoom:
    room_id: str
    floor: str
    outline: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class RadioModel:
    """The propagation the map assumes; the defaults fit common houses (docs/accuracy.md)."""

    exponent: float = 2.2
    ref_dbm: float = -59.0  # a typical tag at 1 m
    wall_db: float = 5.0
    floor_db: float = 15.0
    tag_height: float = 1.0
    sigma_db: float = 4.0  # what a smoothed report strays from the spot's mean
    offset_sigma_db: float = 4.0  # how far a tag's transmit power strays from ref_dbm
    silent_dbm: float = -92.0  # weaker than this, a node may well report nothing


@dataclass(frozen=True, slots=True)
class FloorPlan:
    floors: Mapping[str, float]  # floor id -> elevation in metres
    rooms: Sequence[PlanRoom]
    nodes: Sequence[PlanNode]
    model: RadioModel = field(default_factory=RadioModel)


@dataclass(frozen=True, slots=True)
class TagOffset:
    """What is believed of a tag's transmit power against `RadioModel.ref_dbm` (dB); learned per
    asset by the estimator, so the absolute level of what the nodes hear counts once known."""

    mean_db: float = 0.0
    sigma_db: float | None = None  # None: the model's offset_sigma_db


NO_OFFSET = TagOffset()


@dataclass(frozen=True, slots=True)
class Fit:
    rooms: dict[str, float]  # each room's log-likelihood of the report (higher fits better)
    offset_db: float  # the tag's offset at the spot that fits best
    # what each heard node reported above the best spot's mean and the tag's offset: a node
    # whose residuals lean one way over many assets has a receiver bias
    residuals: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Position:
    x: float
    y: float
    floor: str
    accuracy_m: float  # one standard deviation of the spots' spread


class RadioMap:
    """Per room, its spots and the mean dBm each node should hear from them."""

    def __init__(self, plan: FloorPlan, means: Mapping[str, Array] | None = None) -> None:
        self.plan = plan
        self.model = plan.model
        self.nodes = [n.node_id for n in plan.nodes]
        self._index = {n: i for i, n in enumerate(self.nodes)}
        self.rooms = {r.room_id: r for r in plan.rooms}
        grids = {r.room_id: _spots(r.outline) for r in plan.rooms}
        self.spots = {room: grid[0] for room, grid in grids.items()}
        self._spacing = {room: grid[1] for room, grid in grids.items()}
        self.means = dict(means) if means is not None else self._model_means()
        self._last: tuple[Any, tuple[Array, Array]] | None = None
        self._stack()

    def covers(self, room: str) -> bool:
        return room in self.means

    def hears(self, heard: Mapping[str, float]) -> bool:
        """Whether a node on the plan heard the asset: silence alone places nothing."""
        return any(node in self._index for node in heard)

    def fit(
        self,
        heard: Mapping[str, float],
        online: Mapping[str, bool],
        offset: TagOffset = NO_OFFSET,
    ) -> Fit:
        """How well the report fits each room, and the tag offset that fits it best."""
        ll, offsets = self._all_fits(heard, online, offset)
        tops = np.maximum.reduceat(ll, self._starts)
        with np.errstate(divide="ignore", invalid="ignore"):  # a room with no plausible spot
            shifted = np.nan_to_num(np.exp(ll - np.repeat(tops, self._sizes)), nan=0.0)
            sums = np.add.reduceat(shifted, self._starts)
            fits = tops + np.log(sums / self._sizes)
        rooms = {room: float(v) for room, v in zip(self._order, fits, strict=True)}
        spot = int(ll.argmax())
        tag_offset = float(offsets[spot])
        residuals = {
            node: heard[node] - float(self._all[spot, self._index[node]]) - tag_offset
            for node in heard
            if node in self._index
        }
        return Fit(rooms, tag_offset, residuals)

    def position(
        self,
        room: str,
        heard: Mapping[str, float],
        online: Mapping[str, bool],
        offset: TagOffset = NO_OFFSET,
    ) -> Position | None:
        """Where in `room` the report fits best, as a weighted mean of its spots."""
        if room not in self.means or not self.hears(heard):
            return None
        ll = self._all_fits(heard, online, offset)[0][self._slices[room]]
        if not np.isfinite(ll.max()):
            ll = self._spot_fits(heard, online, offset, self._slices[room])[0]
        return _weighted(self.spots[room], ll, self.rooms[room].floor, self._spacing[room])

    def floor_position(
        self,
        floor: str,
        heard: Mapping[str, float],
        online: Mapping[str, bool],
        offset: TagOffset = NO_OFFSET,
    ) -> Position | None:
        """Where on `floor` the report fits best, whatever the room (the room an asset is
        reported in changes later than the signal, on purpose)."""
        if floor not in self._floors or not self.hears(heard):
            return None
        index, spots, spacing = self._floors[floor]
        ll = self._spot_fits(heard, online, offset, index)[0]
        return _weighted(spots, ll, floor, spacing)

    def within(self, room: str, x: float, y: float) -> tuple[float, float]:
        """The point of `room` nearest to (x, y): a position never leaves its reported room."""
        outline = self.rooms[room].outline
        if _inside((x, y), outline):
            return x, y
        edges = zip(outline, [*outline[1:], outline[0]], strict=True)
        best = min(
            (_nearest_on(a, b, (x, y)) for a, b in edges),
            key=lambda p: (p[0] - x) ** 2 + (p[1] - y) ** 2,
        )
        # a hair inside, so the point's room is the reported one whatever the rounding
        cx, cy = self.spots[room].mean(axis=0)
        dx, dy = cx - best[0], cy - best[1]
        norm = math.hypot(dx, dy) or 1.0
        step = min(EDGE_INSET_M, norm)
        return best[0] + dx / norm * step, best[1] + dy / norm * step

    def replace_means(self, means: Mapping[str, Array]) -> None:
        """Other means for some rooms' spots (one row per spot, one column per node)."""
        self.means.update(means)
        self._stack()

    # the fit -------------------------------------------------------------------------------------

    def _stack(self) -> None:
        """Every room's spots in one array, so a fit is a few numpy operations for all rooms."""
        self._last = None
        self._order = list(self.means)
        sizes = [len(self.means[r]) for r in self._order]
        self._sizes = np.array(sizes)
        self._starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)
        self._all = np.concatenate([self.means[r] for r in self._order])
        self._slices = {
            r: slice(int(start), int(start) + size)
            for r, start, size in zip(self._order, self._starts, sizes, strict=True)
        }
        self._floors: dict[str, tuple[npt.NDArray[np.intp], Array, float]] = {}
        for floor in {self.rooms[r].floor for r in self._order}:
            on = [r for r in self._order if self.rooms[r].floor == floor]
            index = np.concatenate(
                [np.arange(self._slices[r].start, self._slices[r].stop) for r in on]
            )
            spots = np.concatenate([self.spots[r] for r in on])
            self._floors[floor] = (index, spots, min(self._spacing[r] for r in on))

    def _all_fits(
        self, heard: Mapping[str, float], online: Mapping[str, bool], prior: TagOffset
    ) -> tuple[Array, Array]:
        """Every spot's fit, -inf where the loudest node could not sound as loud as it did (so
        far rooms cost nothing). The last answer is kept for the position that follows; the
        prior may have learned from this very fit meanwhile, the same report is not refitted."""
        key = (tuple(sorted(heard.items())), tuple(sorted(online.items())))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        loudest = max(heard, key=lambda n: heard[n]) if heard else None
        ll = np.full(len(self._all), -np.inf)
        offsets = np.zeros(len(self._all))
        plausible = (
            np.flatnonzero(
                self._all[:, self._index[loudest]] >= heard[loudest] - PLAUSIBLE_DB - prior.mean_db
            )
            if loudest in self._index
            else np.empty(0, dtype=np.intp)
        )
        if len(plausible):
            ll[plausible], offsets[plausible] = self._spot_fits(heard, online, prior, plausible)
        else:
            ll, offsets = self._spot_fits(heard, online, prior, slice(None))
        self._last = (key, (ll, offsets))
        return ll, offsets

    def _spot_fits(
        self,
        heard: Mapping[str, float],
        online: Mapping[str, bool],
        prior: TagOffset,
        spots: slice | npt.NDArray[np.intp],
    ) -> tuple[Array, Array]:
        """Each spot's log-likelihood and the tag offset that fits it best."""
        m = self.model
        heard_idx = [self._index[n] for n in heard if n in self._index]
        values = np.array([heard[n] for n in heard if n in self._index])
        silent_idx = [i for n, i in self._index.items() if n not in heard and online.get(n, True)]
        sigma_o = prior.sigma_db if prior.sigma_db is not None else m.offset_sigma_db
        shrink = (m.sigma_db / sigma_o) ** 2
        means = self._all[spots]
        residual = values[None, :] - means[:, heard_idx]
        offset = (residual.sum(axis=1) + shrink * prior.mean_db) / (len(heard_idx) + shrink)
        ll = -((residual - offset[:, None]) ** 2).sum(axis=1) / (2 * m.sigma_db**2)
        ll -= (offset - prior.mean_db) ** 2 / (2 * sigma_o**2)
        if silent_idx:
            loud = means[:, silent_idx] + offset[:, None] - m.silent_dbm
            # a node that would hear the spot well but reported nothing: unlikely there
            ll -= (np.clip(loud, 0.0, None) ** 2).sum(axis=1) / (2 * m.sigma_db**2)
        return ll, offset

    # the model ----------------------------------------------------------------------------------

    def _model_means(self) -> dict[str, Array]:
        m = self.model
        walls = _walls(self.plan.rooms)
        out: dict[str, Array] = {}
        for room in self.plan.rooms:
            spots = self.spots[room.room_id]
            z = self.plan.floors.get(room.floor, 0.0) + m.tag_height
            columns = []
            for node in self.plan.nodes:
                nz = self.plan.floors.get(node.floor, 0.0) + node.height
                d = np.sqrt(
                    (spots[:, 0] - node.x) ** 2 + (spots[:, 1] - node.y) ** 2 + (z - nz) ** 2
                )
                loss = 10 * m.exponent * np.log10(np.maximum(d, 0.1))
                loss += m.wall_db * _crossings(
                    spots, (node.x, node.y), walls, room.floor, node.floor
                )
                loss += m.floor_db * abs(
                    _level(self.plan, room.floor) - _level(self.plan, node.floor)
                )
                columns.append(m.ref_dbm + node.offset_db - loss)
            out[room.room_id] = np.stack(columns, axis=1)
        return out


def _weighted(spots: Array, ll: Array, floor: str, spacing: float) -> Position:
    """The spots' mean weighted by how well each fits, and their spread about it."""
    weights = np.exp((ll - ll.max()) / POSITION_TEMPERATURE)
    weights /= weights.sum()
    x, y = (weights[:, None] * spots).sum(axis=0)
    spread = float(np.sqrt((weights * ((spots[:, 0] - x) ** 2 + (spots[:, 1] - y) ** 2)).sum()))
    return Position(float(x), float(y), floor, max(spread, spacing / 2))


def _level(plan: FloorPlan, floor: str) -> int:
    return (
        sorted(plan.floors, key=lambda f: plan.floors[f]).index(floor)
        if floor in plan.floors
        else 0
    )


def _spots(outline: Sequence[tuple[float, float]]) -> tuple[Array, float]:
    xs = [p[0] for p in outline]
    ys = [p[1] for p in outline]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    area = abs(_shoelace(outline)) or (x1 - x0) * (y1 - y0)
    spacing = max(MIN_SPACING_M, math.sqrt(area / MAX_SPOTS))
    grid = [
        (x0 + (i + 0.5) * spacing, y0 + (j + 0.5) * spacing)
        for i in range(max(1, int((x1 - x0) / spacing)))
        for j in range(max(1, int((y1 - y0) / spacing)))
    ]
    inside = [p for p in grid if _inside(p, outline)]
    if not inside:
        inside = [(sum(xs) / len(xs), sum(ys) / len(ys))]
    return np.array(inside, dtype=np.float64), spacing


def _nearest_on(
    a: tuple[float, float], b: tuple[float, float], p: tuple[float, float]
) -> tuple[float, float]:
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length2
    t = min(1.0, max(0.0, t))
    return a[0] + t * dx, a[1] + t * dy


def _shoelace(points: Sequence[tuple[float, float]]) -> float:
    return 0.5 * sum(
        a[0] * b[1] - b[0] * a[1] for a, b in zip(points, [*points[1:], points[0]], strict=True)
    )


def _inside(p: tuple[float, float], outline: Sequence[tuple[float, float]]) -> bool:
    x, y = p
    inside = False
    for (x0, y0), (x1, y1) in zip(outline, [*outline[1:], outline[0]], strict=True):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


Segment = tuple[float, float, float, float]


def _walls(rooms: Sequence[PlanRoom]) -> dict[str, list[Segment]]:
    """Every room edge, once per floor: edges are cut at every corner lying on them, so a hall's
    long side and the two rooms along it share the same pieces of wall."""
    edges: dict[str, list[Segment]] = {}
    corners: dict[str, set[tuple[float, float]]] = {}
    for room in rooms:
        pts = room.outline
        corners.setdefault(room.floor, set()).update(pts)
        for a, b in zip(pts, [*pts[1:], pts[0]], strict=True):
            edges.setdefault(room.floor, []).append((a[0], a[1], b[0], b[1]))
    found: dict[str, list[Segment]] = {}
    for floor, segments in edges.items():
        pieces: set[Segment] = set()
        for segment in segments:
            pieces.update(_cut(segment, corners[floor]))
        found[floor] = sorted(pieces)
    return found


def _cut(segment: Segment, corners: set[tuple[float, float]]) -> list[Segment]:
    ax, ay, bx, by = segment
    length2 = (bx - ax) ** 2 + (by - ay) ** 2
    if length2 == 0:
        return []
    stops = {0.0, 1.0}
    for cx, cy in corners:
        t = ((cx - ax) * (bx - ax) + (cy - ay) * (by - ay)) / length2
        off = abs((bx - ax) * (cy - ay) - (by - ay) * (cx - ax)) / math.sqrt(length2)
        if 0.0 < t < 1.0 and off < 0.01:
            stops.add(t)
    ts = sorted(stops)
    out = []
    for t0, t1 in itertools.pairwise(ts):
        p = (round(ax + t0 * (bx - ax), 2), round(ay + t0 * (by - ay), 2))
        q = (round(ax + t1 * (bx - ax), 2), round(ay + t1 * (by - ay), 2))
        out.append((*p, *q) if p <= q else (*q, *p))
    return out


def _crossings(
    spots: Array,
    node: tuple[float, float],
    walls: Mapping[str, Sequence[Segment]],
    floor: str,
    node_floor: str,
) -> Array:
    """Walls the straight line from each spot to the node crosses (half each on two floors)."""
    floors = {floor, node_floor}
    total = np.zeros(len(spots))
    for f in floors:
        for segment in walls.get(f, ()):
            hits = _cross(spots, node, segment)
            total += hits if len(floors) == 1 else hits / 2
    return total


def _cross(spots: Array, node: tuple[float, float], segment: Segment) -> Array:
    """1.0 where the segment spot->node properly crosses the wall segment."""
    cx, cy, dx, dy = segment
    nx, ny = node
    ax, ay = spots[:, 0], spots[:, 1]

    # the line spot->node against the wall's two ends, and the wall against spot and node
    o1 = np.sign((nx - ax) * (cy - ay) - (ny - ay) * (cx - ax))
    o2 = np.sign((nx - ax) * (dy - ay) - (ny - ay) * (dx - ax))
    o3 = np.sign((dx - cx) * (ay - cy) - (dy - cy) * (ax - cx))
    o4 = np.sign((dx - cx) * (ny - cy) - (dy - cy) * (nx - cx))
    crossed: Array = ((o1 * o2 < 0) & (o3 * o4 < 0)).astype(np.float64)
    return crossed
