"""The locators the harness compares, all with the interface of `location.Locator`.

- `nearest`: the integration today, upstream-Bermuda style: the node with the strongest smoothed
  RSSI within the fusion window wins when it beats the current one by the hysteresis
  (`fusion.choose_node`, with the integration's default window and hysteresis), re-decided on
  every event and at the hub's 30 s housekeeping; the asset's room is that node's room.
- `companion`: ESPresense-companion style, written from its public description: a distance per
  node from the RSSI with a log-distance model (reference RSSI at 1 m, exponent), a weighted
  least-squares multilateration on each floor heard (Levenberg-Marquardt, weights falling with
  the distance, the floor with the smallest residual wins), a constant-velocity Kalman filter per
  device, and the room whose polygon holds the point, else the nearest room on that floor.
- `ours`: `custom_components/asset_tracker/location.py`, imported when it is asked for.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from .scenario import Scenario, adjacency

HOUSEKEEPING_MS = 30_000  # hub.HOUSEKEEPING_INTERVAL
INTEGRATION = Path(__file__).resolve().parents[2] / "custom_components" / "asset_tracker"
PACKAGE = "_accuracy_asset_tracker"


def integration_module(name: str) -> ModuleType:
    """One module of the integration (fusion, const, location), loaded from its file alone: the
    package's `__init__` (the hub and Home Assistant's runtime) is not needed and not imported."""
    package = sys.modules.get(PACKAGE)
    if package is None:
        # a bare package over the integration's folder: its modules' relative imports resolve,
        # its `__init__` does not run
        package = sys.modules[PACKAGE] = ModuleType(PACKAGE)
        package.__path__ = [str(INTEGRATION)]
    qualified = f"{PACKAGE}.{name}"
    found = sys.modules.get(qualified)
    if found is not None:
        return found
    path = INTEGRATION / f"{name}.py"
    if not path.exists():
        raise ImportError(f"no {path}")
    spec = importlib.util.spec_from_file_location(qualified, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[qualified]
        raise
    return module


@dataclass(frozen=True, slots=True)
class Estimate:
    room: str | None
    floor: str | None
    confidence: float
    since_ms: int
    position: Point | None = None


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float
    floor: str


class LocatorLike(Protocol):
    def observe(self, asset: str, node: str, rssi: float, at_ms: int) -> None: ...
    def lost(self, asset: str, node: str, at_ms: int) -> None: ...
    def node_online(self, node: str, online: bool, at_ms: int) -> None: ...
    def locate(self, asset: str, now_ms: int) -> Any: ...
    def train(self, room: str, samples: Sequence[Mapping[str, float]]) -> None: ...
    def correct(self, asset: str, room: str, now_ms: int) -> None: ...


def fusion_defaults() -> tuple[int, float]:
    """The integration's default fusion window (ms) and hysteresis (dB)."""
    const = integration_module("const")
    options = const.DEFAULT_OPTIONS
    return int(options[const.CONF_FUSION_WINDOW]) * 1000, float(options[const.CONF_HYSTERESIS])


# nearest ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Asset:
    sightings: dict[str, Any] = field(default_factory=dict)
    node: str | None = None
    since_ms: int = 0
    housekeeping_ms: int = 0


class NearestLocator:
    """Today's integration: `fusion.choose_node` and `fused_presence`, node -> its room."""

    name = "nearest"

    def __init__(self, scenario: Scenario) -> None:
        self._fusion = integration_module("fusion")
        self.window_ms, self.hysteresis_db = fusion_defaults()
        self._node_room = {n: spec.room for n, spec in scenario.nodes.items()}
        self._room_floor = {r.id: r.floor for r in scenario.rooms.values()}
        self._assets: dict[str, _Asset] = {}

    def settings(self) -> dict[str, Any]:
        return {"fusion_window_s": self.window_ms / 1000, "area_hysteresis_db": self.hysteresis_db}

    def _asset(self, asset: str) -> _Asset:
        found = self._assets.get(asset)
        if found is None:
            found = self._assets[asset] = _Asset()
        return found

    def observe(self, asset: str, node: str, rssi: float, at_ms: int) -> None:
        self._sighting(asset, node, rssi, True, at_ms)

    def lost(self, asset: str, node: str, at_ms: int) -> None:
        self._sighting(asset, node, None, False, at_ms)

    def _sighting(
        self, asset: str, node: str, rssi: float | None, present: bool, at_ms: int
    ) -> None:
        state = self._asset(asset)
        old = state.sightings.get(node)
        if old is not None and at_ms < old.wall_ms:
            return  # older than what that node said last
        state.sightings[node] = self._fusion.Sighting(
            rssi=rssi if rssi is not None else (old.rssi if old else None),
            distance_m=None,
            wall_ms=at_ms,
            present=present,
            order=(at_ms, 0),
        )
        self._fuse(state, at_ms)

    def _fuse(self, state: _Asset, now_ms: int) -> None:
        present = {n: s for n, s in state.sightings.items() if s.present is not False}
        chosen = self._fusion.choose_node(
            present, state.node, now_ms, self.window_ms, self.hysteresis_db
        )
        if self._fusion.fused_presence(state.sightings) == "away":
            chosen = None
        if chosen != state.node:
            state.node, state.since_ms = chosen, now_ms

    def node_online(self, node: str, online: bool, at_ms: int) -> None:
        return None  # the hub's fusion does not look at the nodes' availability

    def locate(self, asset: str, now_ms: int) -> Estimate:
        state = self._asset(asset)
        if now_ms - state.housekeeping_ms >= HOUSEKEEPING_MS:
            state.housekeeping_ms = now_ms
            self._fuse(state, now_ms)
        room = self._node_room.get(state.node) if state.node else None
        return Estimate(
            room, self._room_floor.get(room) if room else None, 1.0 if room else 0.0, state.since_ms
        )

    def train(self, room: str, samples: Sequence[Mapping[str, float]]) -> None:
        return None

    def correct(self, asset: str, room: str, now_ms: int) -> None:
        return None


# companion --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Axis:
    """One axis of a constant-velocity Kalman filter: position, velocity, 2x2 covariance."""

    p: float
    v: float = 0.0
    pp: float = 4.0
    pv: float = 0.0
    vv: float = 1.0

    def predict(self, dt: float, q: float) -> None:
        self.p += self.v * dt
        pp = self.pp + 2 * dt * self.pv + dt * dt * self.vv + q * dt**3 / 3
        pv = self.pv + dt * self.vv + q * dt * dt / 2
        self.vv += q * dt
        self.pp, self.pv = pp, pv

    def update(self, z: float, r: float) -> None:
        s = self.pp + r
        k_p, k_v = self.pp / s, self.pv / s
        y = z - self.p
        self.p += k_p * y
        self.v += k_v * y
        self.vv -= k_v * self.pv
        self.pv -= k_p * self.pv
        self.pp -= k_p * self.pp


@dataclass(slots=True)
class _Device:
    readings: dict[str, tuple[float, int]] = field(default_factory=dict)
    dirty: bool = False
    floor: str | None = None
    x: _Axis | None = None
    y: _Axis | None = None
    updated_ms: int = 0
    heard: frozenset[str] = frozenset()
    estimate: Estimate = field(default_factory=lambda: Estimate(None, None, 0.0, 0))
    error_m: float = 0.0


class CompanionLocator:
    """Multilateration from RSSI distances, a Kalman filter per device, room by polygon."""

    name = "companion"
    PROCESS_NOISE = 0.5  # m^2/s^3: people walk, stop and turn
    ITERATIONS = 12

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        settings = scenario.companion
        self.ref_rssi = float(settings["ref_rssi"])
        self.exponent = float(settings["exponent"])
        self.tag_height = float(settings["tag_height"])
        self.window_ms, _ = fusion_defaults()
        self._nodes = {
            n.id: (n.x, n.y, scenario.floors[n.floor].height + n.height, n.floor)
            for n in scenario.nodes.values()
        }
        self._bounds = {
            f: scenario.bounds(f) for f in scenario.floors if scenario.floor_rooms.get(f)
        }
        self._offline: set[str] = set()
        self._devices: dict[str, _Device] = {}

    def settings(self) -> dict[str, Any]:
        return {
            "ref_rssi": self.ref_rssi,
            "exponent": self.exponent,
            "tag_height_m": self.tag_height,
            "reading_window_s": self.window_ms / 1000,
            "kalman_process_noise": self.PROCESS_NOISE,
        }

    def _device(self, asset: str) -> _Device:
        found = self._devices.get(asset)
        if found is None:
            found = self._devices[asset] = _Device()
        return found

    def observe(self, asset: str, node: str, rssi: float, at_ms: int) -> None:
        device = self._device(asset)
        old = device.readings.get(node)
        if old is None or at_ms >= old[1]:
            device.readings[node] = (rssi, at_ms)
            device.dirty = True

    def lost(self, asset: str, node: str, at_ms: int) -> None:
        device = self._device(asset)
        if device.readings.pop(node, None) is not None:
            device.dirty = True

    def node_online(self, node: str, online: bool, at_ms: int) -> None:
        if online:
            self._offline.discard(node)
        else:
            self._offline.add(node)
            for device in self._devices.values():
                if node in device.readings:
                    device.dirty = True

    def distance(self, rssi: float) -> float:
        return 10 ** ((self.ref_rssi - rssi) / (10 * self.exponent))

    def locate(self, asset: str, now_ms: int) -> Estimate:
        device = self._device(asset)
        fresh = {
            n: r
            for n, (r, at) in device.readings.items()
            if now_ms - at <= self.window_ms and n not in self._offline and n in self._nodes
        }
        heard = frozenset(fresh)
        if not device.dirty and heard == device.heard:
            return device.estimate
        device.dirty, device.heard = False, heard
        if not fresh:
            if device.estimate.room is not None:
                device.estimate = Estimate(None, None, 0.0, now_ms)
            return device.estimate
        floor, (x, y), error = self.solve(fresh)
        dt = max(0.0, (now_ms - device.updated_ms) / 1000)
        r = max(0.25, error) ** 2
        if device.x is None or device.y is None or floor != device.floor:
            device.x, device.y, device.floor = _Axis(x), _Axis(y), floor
        else:
            device.x.predict(dt, self.PROCESS_NOISE)
            device.y.predict(dt, self.PROCESS_NOISE)
            device.x.update(x, r)
            device.y.update(y, r)
        device.updated_ms, device.error_m = now_ms, error
        room = self.scenario.nearest_room(floor, device.x.p, device.y.p)
        since = device.estimate.since_ms if room == device.estimate.room else now_ms
        confidence = max(0.0, min(1.0, 1 / (1 + error)))
        point = Point(device.x.p, device.y.p, floor)
        device.estimate = Estimate(room, floor, confidence, since, point)
        return device.estimate

    def solve(self, rssi: Mapping[str, float]) -> tuple[str, tuple[float, float], float]:
        """The floor, the point on it and the weighted RMS distance error (m)."""
        measured = [(node, self.distance(value)) for node, value in rssi.items()]
        floors = sorted({self._nodes[n][3] for n, _ in sorted(measured, key=lambda m: m[1])[:3]})
        best: tuple[float, str, tuple[float, float]] | None = None
        for floor in floors:
            if floor not in self._bounds:
                continue
            point, error = self._solve_floor(floor, measured)
            if best is None or error < best[0]:
                best = (error, floor, point)
        assert best is not None
        return best[1], best[2], best[0]

    def _solve_floor(
        self, floor: str, measured: list[tuple[str, float]]
    ) -> tuple[tuple[float, float], float]:
        zt = self.scenario.floors[floor].height + self.tag_height
        x0, y0, x1, y1 = self._bounds[floor]
        rows = []
        for node, d in measured:
            nx, ny, nz, _ = self._nodes[node]
            rows.append((nx, ny, (nz - zt) ** 2, d, 1.0 / (0.5 + d) ** 2))
        wsum = sum(r[4] for r in rows)
        x = sum(r[0] * r[4] for r in rows) / wsum
        y = sum(r[1] * r[4] for r in rows) / wsum
        x, y = min(max(x, x0), x1), min(max(y, y0), y1)
        if len(rows) < 3:
            strongest = min(rows, key=lambda r: r[3])
            return (min(max(strongest[0], x0), x1), min(max(strongest[1], y0), y1)), strongest[3]
        damping = 1e-3
        cost = _cost(rows, x, y)
        for _ in range(self.ITERATIONS):
            # normal equations of the weighted least squares, Levenberg-Marquardt damped
            a11 = a12 = a22 = b1 = b2 = 0.0
            for nx, ny, dz2, d, w in rows:
                dx, dy = x - nx, y - ny
                rho = math.sqrt(dx * dx + dy * dy + dz2) or 1e-6
                res = rho - d
                jx, jy = dx / rho, dy / rho
                a11 += w * jx * jx
                a12 += w * jx * jy
                a22 += w * jy * jy
                b1 += w * jx * res
                b2 += w * jy * res
            a11 += damping * (a11 or 1.0)
            a22 += damping * (a22 or 1.0)
            det = a11 * a22 - a12 * a12
            if abs(det) < 1e-12:
                break
            sx = -(a22 * b1 - a12 * b2) / det
            sy = -(a11 * b2 - a12 * b1) / det
            nx_, ny_ = min(max(x + sx, x0), x1), min(max(y + sy, y0), y1)
            new = _cost(rows, nx_, ny_)
            if new < cost:
                x, y, cost = nx_, ny_, new
                damping = max(1e-6, damping / 3)
                if sx * sx + sy * sy < 1e-6:
                    break
            else:
                damping *= 5
        return (x, y), math.sqrt(cost / wsum)


def _cost(rows: list[tuple[float, float, float, float, float]], x: float, y: float) -> float:
    total = 0.0
    for nx, ny, dz2, d, w in rows:
        res = math.sqrt((x - nx) ** 2 + (y - ny) ** 2 + dz2) - d
        total += w * res * res
    return total


def _ignore_training(self: Any, room: str, samples: Sequence[Mapping[str, float]]) -> None:
    return None


def _ignore_correction(self: Any, asset: str, room: str, now_ms: int) -> None:
    return None


CompanionLocator.train = _ignore_training  # type: ignore[attr-defined]
CompanionLocator.correct = _ignore_correction  # type: ignore[attr-defined]


# ours ---------------------------------------------------------------------------------------------


def ours_available() -> bool:
    try:
        integration_module("location")
    except ImportError:
        return False
    return True


class OursLocator:
    """`custom_components/asset_tracker/location.py` with the scenario's rooms and nodes."""

    name = "ours"

    def __init__(self, scenario: Scenario) -> None:
        module = integration_module("location")
        adjacent = adjacency(scenario)
        nodes_in: dict[str, list[str]] = {}
        for node in scenario.nodes.values():
            if node.room:
                nodes_in.setdefault(node.room, []).append(node.id)
        rooms = [
            module.Room(
                room_id=room.id,
                floor=room.floor,
                nodes=tuple(sorted(nodes_in.get(room.id, []))),
                adjacent=adjacent[room.id],
            )
            for room in scenario.rooms.values()
        ]
        # ASSET_TRACKER_LOCATOR_SETTINGS='{"temperature_db": 3}' tries other constants
        overrides = json.loads(os.environ.get("ASSET_TRACKER_LOCATOR_SETTINGS") or "{}")
        self._impl = module.Locator(rooms, module.LocatorSettings(**overrides))
        self._settings_obj = getattr(self._impl, "settings", None)
        self.observe = self._impl.observe
        self.lost = self._impl.lost
        self.node_online = self._impl.node_online
        self.locate = self._impl.locate
        self.train = self._impl.train
        self.correct = self._impl.correct

    def settings(self) -> dict[str, Any]:
        found = self._settings_obj
        if found is None:
            return {}
        try:
            from dataclasses import asdict

            return dict(asdict(found))
        except TypeError:
            return {"settings": repr(found)}


class OursPlanLocator(OursLocator):
    """`ours` with the scenario's floor plan: node positions and room outlines (the walls are the
    outlines, at the map's default loss; the scenario's own walls, shadowing and node biases
    are not told), the map's default radio model."""

    name = "ours_plan"

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        module = integration_module("radio_map")
        # ASSET_TRACKER_RADIO_MODEL='{"exponent": 2.0}' tries another propagation model
        model = module.RadioModel(**json.loads(os.environ.get("ASSET_TRACKER_RADIO_MODEL") or "{}"))
        self._impl.set_map(module.RadioMap(floor_plan(scenario, module, model)))


def floor_plan(scenario: Scenario, module: ModuleType, model: Any = None) -> Any:
    """The scenario as a user would draw it on the integration's floor plan."""
    return module.FloorPlan(
        floors={f.id: f.height for f in scenario.floors.values()},
        rooms=[module.PlanRoom(r.id, r.floor, r.polygon) for r in scenario.rooms.values()],
        nodes=[module.PlanNode(n.id, n.floor, n.x, n.y, n.height) for n in scenario.nodes.values()],
        model=model or module.RadioModel(),
    )


def _oracle(scenario: Scenario, seed: int) -> Any:
    from .oracle import OracleLocator

    return OracleLocator(scenario, seed)


FACTORIES: dict[str, Callable[[Scenario, int], Any]] = {
    "nearest": lambda scenario, _seed: NearestLocator(scenario),
    "companion": lambda scenario, _seed: CompanionLocator(scenario),
    "ours": lambda scenario, _seed: OursLocator(scenario),
    "ours_plan": lambda scenario, _seed: OursPlanLocator(scenario),
    "oracle": _oracle,
}


def available(names: Iterable[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The locators to run and, for each left out, why."""
    wanted = list(names) if names else list(FACTORIES)
    skipped: dict[str, str] = {}
    run: list[str] = []
    for name in wanted:
        if name == "ours" and not ours_available():
            skipped[name] = "custom_components/asset_tracker/location.py is not there yet"
            continue
        run.append(name)
    return run, skipped
