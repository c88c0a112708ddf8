"""The scenario file: a building, its edge nodes, tags walking through it and the radio model.

Loaded from YAML (an `extends:` file is read first and deep-merged under this one), validated with
voluptuous; every problem is one line such as `rooms[2].polygon: expected at least 3 points`.
Geometry (rooms as polygons, walls, doors, adjacency) lives here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import voluptuous as vol
import yaml

ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
NODE_ID = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class ScenarioError(ValueError):
    """A scenario that cannot be run; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# schema ---------------------------------------------------------------------------------------


def _number(low: float | None = None, high: float | None = None) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise vol.Invalid("expected a number")
        out = float(value)
        if not math.isfinite(out):
            raise vol.Invalid("expected a finite number")
        if low is not None and out < low:
            raise vol.Invalid(f"must be at least {low:g}")
        if high is not None and out > high:
            raise vol.Invalid(f"must be at most {high:g}")
        return out

    return check


def _point(value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise vol.Invalid("expected a point [x, y]")
    num = _number()
    return (num(value[0]), num(value[1]))


def _polygon(value: Any) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list):
        raise vol.Invalid("expected a list of points [x, y]")
    if len(value) < 3:
        raise vol.Invalid("expected at least 3 points")
    points = tuple(_point(p) for p in value)
    if abs(polygon_area(points)) < 1e-6:
        raise vol.Invalid("polygon has no area")
    return points


def _each(schema: Any) -> Callable[[Any], list[Any]]:
    """A list whose every bad item is reported (voluptuous stops at the first one)."""
    compiled = vol.Schema(schema)

    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise vol.Invalid("expected a list")
        items: list[Any] = []
        errors: list[vol.Invalid] = []
        for index, item in enumerate(value):
            try:
                items.append(compiled(item))
            except vol.MultipleInvalid as err:
                errors.extend(vol.Invalid(e.msg, [index, *e.path]) for e in err.errors)
            except vol.Invalid as err:
                errors.append(vol.Invalid(err.msg, [index, *err.path]))
        if errors:
            raise vol.MultipleInvalid(errors)
        return items

    return check


def _section(fields: dict[Any, Any]) -> vol.Schema:
    return vol.Schema(fields, extra=vol.PREVENT_EXTRA)


def _opt(key: str, default: Any) -> vol.Optional:
    return vol.Optional(key, default=default)


_ident = vol.All(str, vol.Match(ID, msg="expected an id (letters, digits, _ . : -)"))

FLOOR = _section({vol.Required("id"): _ident, vol.Required("height"): _number()})
ROOM = _section(
    {
        vol.Required("id"): _ident,
        vol.Optional("name"): str,
        vol.Required("floor"): _ident,
        vol.Required("polygon"): _polygon,
    }
)
WALL = _section(
    {
        vol.Required("floor"): _ident,
        vol.Required("from"): _point,
        vol.Required("to"): _point,
        vol.Optional("attenuation_db"): _number(0, 100),
    }
)
DOOR = _section(
    {
        vol.Required("rooms"): vol.All([_ident], vol.Length(min=2, max=2, msg="expected 2 rooms")),
        vol.Required("at"): _point,
        # time on the stairs when the two rooms are on different floors
        _opt("seconds", 5.0): _number(0, 600),
    }
)
NODE = _section(
    {
        vol.Required("id"): vol.All(
            str, vol.Match(NODE_ID, msg="expected a node id (a-z 0-9 _ -)")
        ),
        vol.Required("x"): _number(),
        vol.Required("y"): _number(),
        vol.Required("floor"): _ident,
        _opt("height", 2.0): _number(0, 50),
        _opt("offset_db", 0.0): _number(-30, 30),
        vol.Optional("room"): _ident,
    }
)
WAYPOINT = _section(
    {
        vol.Optional("x"): _number(),
        vol.Optional("y"): _number(),
        vol.Optional("floor"): _ident,
        vol.Optional("room"): _ident,
        _opt("dwell_s", 0.0): _number(0, 86400),
    }
)
RANDOM_WALK = _section(
    {
        vol.Optional("rooms"): [_ident],
        _opt("dwell_s", [30.0, 300.0]): vol.All(
            [_number(0, 86400)], vol.Length(min=2, max=2, msg="expected [min, max]")
        ),
    }
)
TAG = _section(
    {
        vol.Required("id"): _ident,
        _opt("count", 1): vol.All(int, vol.Range(min=1, max=5000)),
        _opt("advert_interval_ms", 1000): vol.All(int, vol.Range(min=20, max=60000)),
        _opt("tx_power", -59): vol.All(int, vol.Range(min=-100, max=0)),
        _opt("speed", 1.0): _number(0.05, 10),
        _opt("height", 1.0): _number(0, 10),
        vol.Optional("path"): vol.All(
            _each(WAYPOINT), vol.Length(min=1, msg="expected a waypoint")
        ),
        vol.Optional("random_walk"): RANDOM_WALK,
        # a phone: a resolvable private address that changes every so many seconds
        vol.Optional("rotating_address"): vol.Any(vol.All(int, vol.Range(min=10, max=86400)), bool),
        _opt("carried", True): bool,
    }
)
OUTAGE = _section(
    {
        vol.Required("node"): str,
        vol.Required("from"): _number(0),
        vol.Required("to"): _number(0),
        vol.Optional("covers"): [_ident],
    }
)
RADIO = _section(
    {
        _opt("path_loss_exponent", 2.2): _number(1, 6),
        _opt("wall_db", 5.0): _number(0, 100),
        _opt("floor_db", 15.0): _number(0, 100),
        _opt("shadowing", {}): _section(
            {_opt("sigma_db", 4.0): _number(0, 30), _opt("correlation_m", 3.0): _number(0.1, 100)}
        ),
        _opt("fading_sigma_db", 2.0): _number(0, 30),
        _opt("multipath", {}): _section(
            {_opt("probability", 0.0): _number(0, 1), _opt("loss_db", 6.0): _number(0, 60)}
        ),
        _opt("body", {}): _section(
            {
                _opt("loss_db", 0.0): _number(0, 60),
                _opt("probability", 0.5): _number(0, 1),
                _opt("period_s", 20.0): _number(1, 3600),
            }
        ),
        _opt("advert_loss", 0.1): _number(0, 0.99),
        _opt("sensitivity_dbm", -100.0): _number(-130, -30),
    }
)
COMPANION = _section(
    {
        _opt("ref_rssi", -59.0): _number(-100, 0),
        _opt("exponent", 3.0): _number(1, 6),
        _opt("tag_height", 1.0): _number(0, 10),
    }
)
SCENARIO = _section(
    {
        vol.Required("name"): _ident,
        _opt("description", ""): str,
        vol.Optional("extends"): str,
        _opt("duration_s", 600.0): _number(10, 7 * 86400),
        vol.Optional("quick"): _section(
            {
                vol.Optional("duration_s"): _number(10, 86400),
                vol.Optional("tags"): vol.All(int, vol.Range(min=1)),
            }
        ),
        _opt("warmup_s", 30.0): _number(0, 3600),
        vol.Required("floors"): vol.All(_each(FLOOR), vol.Length(min=1, msg="expected a floor")),
        vol.Required("rooms"): vol.All(_each(ROOM), vol.Length(min=1, msg="expected a room")),
        _opt("walls", []): _each(WALL),
        _opt("doors", []): _each(DOOR),
        vol.Required("nodes"): vol.All(_each(NODE), vol.Length(min=1, msg="expected a node")),
        vol.Required("tags"): vol.All(_each(TAG), vol.Length(min=1, msg="expected a tag")),
        _opt("outages", []): _each(OUTAGE),
        _opt("radio", {}): RADIO,
        _opt("train", []): [_ident],
        _opt("companion", {}): COMPANION,
        # published figures this scenario reproduces, shown beside ours in the report
        vol.Optional("reference"): dict,
    }
)


# the scenario as objects ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Floor:
    id: str
    height: float
    level: int


@dataclass(slots=True)
class RoomShape:
    id: str
    name: str
    floor: str
    polygon: tuple[tuple[float, float], ...]
    bbox: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    adjacent: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        self.bbox = (min(xs), min(ys), max(xs), max(ys))

    def contains(self, x: float, y: float) -> bool:
        x0, y0, x1, y1 = self.bbox
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            return False
        return point_in_polygon(x, y, self.polygon)

    @property
    def centroid(self) -> tuple[float, float]:
        return polygon_centroid(self.polygon)


@dataclass(frozen=True, slots=True)
class Wall:
    floor: str
    a: tuple[float, float]
    b: tuple[float, float]
    attenuation_db: float


@dataclass(frozen=True, slots=True)
class Door:
    rooms: tuple[str, str]
    at: tuple[float, float]
    seconds: float


@dataclass(frozen=True, slots=True)
class NodeSpec:
    id: str
    x: float
    y: float
    floor: str
    height: float
    offset_db: float
    room: str | None


@dataclass(frozen=True, slots=True)
class Outage:
    node: str
    start_s: float
    end_s: float
    covers: frozenset[str]


@dataclass(slots=True)
class Scenario:
    """A validated scenario; `raw` is the validated mapping (defaults filled in)."""

    name: str
    description: str
    path: Path | None
    raw: dict[str, Any]
    floors: dict[str, Floor]
    rooms: dict[str, RoomShape]
    walls: list[Wall]
    doors: list[Door]
    nodes: dict[str, NodeSpec]
    tags: list[dict[str, Any]]
    outages: list[Outage]
    radio: dict[str, Any]
    train: list[str]
    companion: dict[str, Any]
    duration_s: float
    warmup_s: float
    quick: dict[str, Any]
    reference: dict[str, Any] | None
    floor_rooms: dict[str, list[RoomShape]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for room in self.rooms.values():
            self.floor_rooms.setdefault(room.floor, []).append(room)

    def room_at(self, floor: str, x: float, y: float) -> str | None:
        """The room whose polygon holds the point on that floor (the first one listed wins)."""
        for room in self.floor_rooms.get(floor, ()):
            if room.contains(x, y):
                return room.id
        return None

    def nearest_room(self, floor: str, x: float, y: float) -> str | None:
        """The room holding the point, else the room whose outline is closest to it."""
        best, best_d = None, math.inf
        for room in self.floor_rooms.get(floor, ()):
            if room.contains(x, y):
                return room.id
            d = polygon_distance(x, y, room.polygon)
            if d < best_d:
                best, best_d = room.id, d
        return best

    def bounds(self, floor: str) -> tuple[float, float, float, float]:
        boxes = [r.bbox for r in self.floor_rooms.get(floor, ())]
        return (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )

    def node_room(self, node: str) -> str | None:
        return self.nodes[node].room


# loading --------------------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: mappings merge key by key, everything else (lists too) replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML mapping, with the file it `extends` merged underneath."""
    path = path.resolve()
    if path in seen:
        raise ScenarioError([f"{path.name}: extends itself through {seen[-1].name}"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError([f"{path}: cannot read: {err}"]) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ScenarioError([f"{path.name}: invalid YAML: {problem}{where}"]) from None
    if not isinstance(raw, dict):
        raise ScenarioError([f"{path.name}: the top level must be a mapping"])
    parent = raw.get("extends")
    if isinstance(parent, str):
        base = read_raw(path.parent / parent, (*seen, path))
        base.pop("name", None)
        raw = deep_merge(base, raw)
    return raw


def load(path: Path | str) -> Scenario:
    path = Path(path)
    return build(read_raw(path), path)


def build(raw: Mapping[str, Any], path: Path | None = None) -> Scenario:
    """Validates a raw mapping; ScenarioError lists every problem, one line each."""
    try:
        data: dict[str, Any] = SCENARIO(dict(raw))
    except vol.MultipleInvalid as err:
        raise ScenarioError(sorted({describe(e) for e in err.errors}, key=_problem_order)) from None
    problems = cross_check(data)
    if problems:
        raise ScenarioError(problems)
    floors_sorted = sorted(data["floors"], key=lambda f: f["height"])
    floors = {f["id"]: Floor(f["id"], f["height"], i) for i, f in enumerate(floors_sorted)}
    rooms = {
        r["id"]: RoomShape(r["id"], r.get("name", r["id"]), r["floor"], r["polygon"])
        for r in data["rooms"]
    }
    radio = data["radio"]
    walls = [
        Wall(w["floor"], w["from"], w["to"], w.get("attenuation_db", radio["wall_db"]))
        for w in data["walls"]
    ]
    doors = [Door((d["rooms"][0], d["rooms"][1]), d["at"], d["seconds"]) for d in data["doors"]]
    scenario = Scenario(
        name=data["name"],
        description=data["description"],
        path=path,
        raw=data,
        floors=floors,
        rooms=rooms,
        walls=walls,
        doors=doors,
        nodes={},
        tags=data["tags"],
        outages=[],
        radio=radio,
        train=data["train"],
        companion=data["companion"],
        duration_s=data["duration_s"],
        warmup_s=data["warmup_s"],
        quick=data.get("quick", {}),
        reference=data.get("reference"),
    )
    for n in data["nodes"]:
        room = n.get("room") or scenario.room_at(n["floor"], n["x"], n["y"])
        scenario.nodes[n["id"]] = NodeSpec(
            n["id"], n["x"], n["y"], n["floor"], n["height"], n["offset_db"], room
        )
    for o in data["outages"]:
        covers = o.get("covers")
        if covers is None:
            covers = covered_rooms(scenario, o["node"])
        scenario.outages.append(Outage(o["node"], o["from"], o["to"], frozenset(covers)))
    link_rooms(scenario)
    return scenario


def covered_rooms(scenario: Scenario, node: str) -> list[str]:
    """A node covers its own room and every room whose centre is nearer to it than to any other
    node on the same floor."""
    spec = scenario.nodes[node]
    out = {spec.room} if spec.room else set()
    for room in scenario.rooms.values():
        cx, cy = room.centroid
        same = [n for n in scenario.nodes.values() if n.floor == room.floor]
        if not same:
            continue
        nearest = min(same, key=lambda n: (math.hypot(n.x - cx, n.y - cy), n.id))
        if nearest.id == node:
            out.add(room.id)
    return sorted(out)


def _problem_order(line: str) -> tuple[Any, ...]:
    return tuple(
        int(p) if p.isdigit() else p for p in line.replace("[", ".").replace("]", "").split(".")
    )


def describe(err: vol.Invalid) -> str:
    path = ""
    for part in err.path:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + str(part)
    message = err.msg
    if message in ("extra keys not allowed", "not a valid option"):
        message = "unknown key"
    elif message == "required key not provided":
        message = "required key is missing"
    elif message.startswith("expected int"):
        message = "expected a whole number"
    elif message.startswith("expected str"):
        message = "expected text"
    return f"{path or '(top level)'}: {message}"


def cross_check(data: dict[str, Any]) -> list[str]:
    """References between sections: floors, rooms and nodes that exist, ids that are unique."""
    problems: list[str] = []
    floors = {f["id"] for f in data["floors"]}
    rooms = {r["id"]: r for r in data["rooms"]}
    nodes = {n["id"] for n in data["nodes"]}

    def unique(section: str) -> None:
        seen: set[str] = set()
        for i, item in enumerate(data[section]):
            if item["id"] in seen:
                problems.append(f"{section}[{i}].id: duplicate id {item['id']}")
            seen.add(item["id"])

    for section in ("floors", "rooms", "nodes", "tags"):
        unique(section)
    for i, r in enumerate(data["rooms"]):
        if r["floor"] not in floors:
            problems.append(f"rooms[{i}].floor: no floor {r['floor']}")
    for i, w in enumerate(data["walls"]):
        if w["floor"] not in floors:
            problems.append(f"walls[{i}].floor: no floor {w['floor']}")
    for i, d in enumerate(data["doors"]):
        for j, room in enumerate(d["rooms"]):
            if room not in rooms:
                problems.append(f"doors[{i}].rooms[{j}]: no room {room}")
    for i, n in enumerate(data["nodes"]):
        if n["floor"] not in floors:
            problems.append(f"nodes[{i}].floor: no floor {n['floor']}")
        if "room" in n and n["room"] not in rooms:
            problems.append(f"nodes[{i}].room: no room {n['room']}")
    for i, t in enumerate(data["tags"]):
        has_path, has_walk = "path" in t, "random_walk" in t
        if has_path == has_walk:
            problems.append(f"tags[{i}]: needs exactly one of path or random_walk")
        if t["count"] > 1 and has_path:
            problems.append(f"tags[{i}].count: a tag with a fixed path cannot have a count")
        for j, w in enumerate(t.get("path", [])):
            where = f"tags[{i}].path[{j}]"
            if "room" in w:
                if w["room"] not in rooms:
                    problems.append(f"{where}.room: no room {w['room']}")
            elif "x" not in w or "y" not in w or "floor" not in w:
                problems.append(f"{where}: needs x, y and floor, or a room")
            elif w["floor"] not in floors:
                problems.append(f"{where}.floor: no floor {w['floor']}")
        for j, room in enumerate(t.get("random_walk", {}).get("rooms", [])):
            if room not in rooms:
                problems.append(f"tags[{i}].random_walk.rooms[{j}]: no room {room}")
        low_high = t.get("random_walk", {}).get("dwell_s")
        if low_high and low_high[0] > low_high[1]:
            problems.append(f"tags[{i}].random_walk.dwell_s: min is above max")
    for i, o in enumerate(data["outages"]):
        if o["node"] not in nodes:
            problems.append(f"outages[{i}].node: no node {o['node']}")
        if o["to"] <= o["from"]:
            problems.append(f"outages[{i}].to: must be after from")
        for j, room in enumerate(o.get("covers", [])):
            if room not in rooms:
                problems.append(f"outages[{i}].covers[{j}]: no room {room}")
    for i, room in enumerate(data["train"]):
        if room not in rooms:
            problems.append(f"train[{i}]: no room {room}")
    return problems


# geometry -------------------------------------------------------------------------------------


def polygon_area(points: tuple[tuple[float, float], ...]) -> float:
    return 0.5 * sum(
        points[i][0] * points[(i + 1) % len(points)][1]
        - points[(i + 1) % len(points)][0] * points[i][1]
        for i in range(len(points))
    )


def polygon_centroid(points: tuple[tuple[float, float], ...]) -> tuple[float, float]:
    area = polygon_area(points)
    cx = cy = 0.0
    for i in range(len(points)):
        (x0, y0), (x1, y1) = points[i], points[(i + 1) % len(points)]
        cross = x0 * y1 - x1 * y0
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    return (cx / (6 * area), cy / (6 * area))


def point_in_polygon(x: float, y: float, points: tuple[tuple[float, float], ...]) -> bool:
    """Even-odd rule; a point on an edge counts as inside."""
    inside = False
    n = len(points)
    for i in range(n):
        (x0, y0), (x1, y1) = points[i], points[(i + 1) % n]
        if _on_segment(x, y, x0, y0, x1, y1):
            return True
        if (y0 > y) != (y1 > y):
            cross_x = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
            if x < cross_x:
                inside = not inside
    return inside


def _on_segment(x: float, y: float, x0: float, y0: float, x1: float, y1: float) -> bool:
    return segment_distance(x, y, x0, y0, x1, y1) < 1e-9


def segment_distance(x: float, y: float, x0: float, y0: float, x1: float, y1: float) -> float:
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((x - x0) * dx + (y - y0) * dy) / length2))
    return math.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def polygon_distance(x: float, y: float, points: tuple[tuple[float, float], ...]) -> float:
    n = len(points)
    return min(segment_distance(x, y, *points[i], *points[(i + 1) % n]) for i in range(n))


def segments_cross(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], d: tuple[float, float]
) -> bool:
    """Whether segment ab crosses segment cd (touching at an end counts)."""

    def orient(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    d1, d2 = orient(c, d, a), orient(c, d, b)
    d3, d4 = orient(a, b, c), orient(a, b, d)
    return (
        ((d1 > 0) != (d2 > 0) or d1 == 0 or d2 == 0)
        and ((d3 > 0) != (d4 > 0) or d3 == 0 or d4 == 0)
        and not (d1 == d2 == 0 and not _collinear_overlap(a, b, c, d))
    )


def _collinear_overlap(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], d: tuple[float, float]
) -> bool:
    return (
        min(a[0], b[0]) <= max(c[0], d[0])
        and min(c[0], d[0]) <= max(a[0], b[0])
        and min(a[1], b[1]) <= max(c[1], d[1])
        and min(c[1], d[1]) <= max(a[1], b[1])
    )


def shared_edge_length(
    p: tuple[tuple[float, float], ...], q: tuple[tuple[float, float], ...]
) -> float:
    """Length of outline the two polygons share (collinear, overlapping edges)."""
    total = 0.0
    for i in range(len(p)):
        a, b = p[i], p[(i + 1) % len(p)]
        ab = math.dist(a, b)
        if ab == 0:
            continue
        ux, uy = (b[0] - a[0]) / ab, (b[1] - a[1]) / ab
        for j in range(len(q)):
            c, d = q[j], q[(j + 1) % len(q)]
            # both ends of cd on the line through ab
            if any(abs((pt[0] - a[0]) * uy - (pt[1] - a[1]) * ux) > 1e-6 for pt in (c, d)):
                continue
            tc = (c[0] - a[0]) * ux + (c[1] - a[1]) * uy
            td = (d[0] - a[0]) * ux + (d[1] - a[1]) * uy
            low, high = max(0.0, min(tc, td)), min(ab, max(tc, td))
            if high > low:
                total += high - low
    return total


def link_rooms(scenario: Scenario) -> None:
    """Room adjacency: rooms on one floor sharing at least 0.5 m of outline, and doors."""
    rooms = list(scenario.rooms.values())
    for i, a in enumerate(rooms):
        for b in rooms[i + 1 :]:
            if a.floor != b.floor:
                continue
            if shared_edge_length(a.polygon, b.polygon) >= 0.5:
                a.adjacent.add(b.id)
                b.adjacent.add(a.id)
    for door in scenario.doors:
        a, b = door.rooms
        scenario.rooms[a].adjacent.add(b)
        scenario.rooms[b].adjacent.add(a)


def adjacency(scenario: Scenario) -> dict[str, frozenset[str]]:
    return {r.id: frozenset(r.adjacent) for r in scenario.rooms.values()}


def room_ids(scenario: Scenario) -> Iterable[str]:
    return scenario.rooms.keys()


def room_spot(scenario: Scenario, room_id: str, rng: Any) -> tuple[float, float, str]:
    """A random spot inside the room, half a metre from its outline where it can be."""
    room = scenario.rooms[room_id]
    x0, y0, x1, y1 = room.bbox
    margin = min(0.5, (x1 - x0) / 4, (y1 - y0) / 4)
    for _ in range(200):
        x = rng.uniform(x0 + margin, x1 - margin)
        y = rng.uniform(y0 + margin, y1 - margin)
        if point_in_polygon(x, y, room.polygon):
            return (x, y, room.floor)
    cx, cy = room.centroid
    return (cx, cy, room.floor)
