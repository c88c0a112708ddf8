"""Floor plans: per Home Assistant floor an image, its size in metres, the rooms' outlines on it
(each a Home Assistant area) and where the nodes stand, kept in the integration's storage.

Everything is in metres from the image's top-left corner (x to the right, y down), so a plan can
be drawn over its image by percentages. Edits are validated before anything changes: bad input is
refused with a translated error, counted, and leaves the stored plans as they were.

The image is one the user can provide from the UI: uploaded with Home Assistant's image upload
(the media picker of the set-floor-plan action: `media-source://image_upload/<id>`, served at
`/api/image/serve/<id>/original`), or a file put under `/config/www` (`/local/<file>`).
"""

from __future__ import annotations

import logging
import math
import pathlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import floor_registry as fr
from homeassistant.helpers.storage import Store

from .const import DOMAIN
from .radio_map import FloorPlan, PlanNode, PlanRoom

_LOGGER = logging.getLogger(__name__)

STORAGE_VERSION = 1
STORAGE_SUFFIX = "floor_plans"
MIN_PLACED_NODES = 3  # fewer nodes on the plans give no position: the rooms alone are used
MAX_IMAGE_BYTES = 10 * 1024 * 1024  # the cap of Home Assistant's image upload
MAX_SIZE_M = 500.0
FLOOR_HEIGHT_M = 3.0  # a floor's default elevation is its level times this
IMAGE_UPLOAD = "media-source://image_upload/"
LOCAL = "/local/"
REJECTED = "floor_plan"  # the counter of refused edits (diagnostics: counters.rejected)
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


@dataclass(slots=True)
class Plan:
    """One floor's plan."""

    image: str  # a URL the frontend can load
    width_m: float
    height_m: float
    elevation_m: float
    rooms: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # area id -> outline

    def inside(self, x: float, y: float) -> bool:
        return 0.0 <= x <= self.width_m and 0.0 <= y <= self.height_m

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "width_m": self.width_m,
            "height_m": self.height_m,
            "elevation_m": self.elevation_m,
            "rooms": {a: [list(p) for p in o] for a, o in self.rooms.items()},
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Plan:
        return cls(
            str(raw["image"]),
            float(raw["width_m"]),
            float(raw["height_m"]),
            float(raw.get("elevation_m", 0.0)),
            {a: [(float(x), float(y)) for x, y in o] for a, o in raw.get("rooms", {}).items()},
        )


@dataclass(slots=True)
class NodePosition:
    floor: str
    x: float
    y: float
    height: float = 1.5
    offset_db: float = 0.0  # calibrated receiver offset

    def as_dict(self) -> dict[str, Any]:
        return {
            "floor": self.floor,
            "x": self.x,
            "y": self.y,
            "height": self.height,
            "offset_db": self.offset_db,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> NodePosition:
        return cls(
            str(raw["floor"]),
            float(raw["x"]),
            float(raw["y"]),
            float(raw.get("height", 1.5)),
            float(raw.get("offset_db", 0.0)),
        )


def invalid(key: str, rejected: dict[str, int], **placeholders: Any) -> ServiceValidationError:
    """A translated refusal, counted."""
    rejected[REJECTED] = rejected.get(REJECTED, 0) + 1
    return ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key=key,
        translation_placeholders={k: str(v) for k, v in placeholders.items()},
    )


class FloorPlans:
    """The stored plans of one fleet, and the edits a person makes to them."""

    def __init__(self, hass: HomeAssistant, entry_id: str, rejected: dict[str, int]) -> None:
        self.hass = hass
        self.plans: dict[str, Plan] = {}  # floor id -> plan
        self.nodes: dict[str, NodePosition] = {}  # node or `ha:<source>` id -> where it stands
        self._rejected = rejected
        self._store: Store[dict[str, Any]] = Store(
            hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}.{STORAGE_SUFFIX}"
        )
        self._listeners: list[Callable[[], None]] = []

    async def async_load(self) -> None:
        data = await self._store.async_load() or {}
        try:
            self.plans = {f: Plan.from_dict(p) for f, p in data.get("floors", {}).items()}
            self.nodes = {n: NodePosition.from_dict(p) for n, p in data.get("nodes", {}).items()}
        except KeyError, TypeError, ValueError:
            _LOGGER.warning("The stored floor plans are unreadable and were set aside")
            self.plans, self.nodes = {}, {}
        self.prune()  # floors or areas removed while the integration was not running

    def as_dict(self) -> dict[str, Any]:
        return {
            "floors": {f: p.as_dict() for f, p in self.plans.items()},
            "nodes": {n: p.as_dict() for n, p in self.nodes.items()},
        }

    @callback
    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def _async_changed(self) -> None:
        await self._store.async_save(self.as_dict())
        for listener in list(self._listeners):
            listener()

    @callback
    def async_listen(self) -> list[Callable[[], None]]:
        """Plans follow the registries: a floor or area removed, an area moved to another floor."""
        bus = self.hass.bus
        return [
            bus.async_listen(fr.EVENT_FLOOR_REGISTRY_UPDATED, self._registries_changed),
            bus.async_listen(ar.EVENT_AREA_REGISTRY_UPDATED, self._registries_changed),
        ]

    @callback
    def _registries_changed(self, _event: Any) -> None:
        if self.prune():
            self.hass.async_create_task(self._async_changed(), eager_start=True)

    def prune(self) -> bool:
        """Drops the plans of removed floors (and the nodes on them) and the outlines of areas
        removed or now on another floor; True when something was dropped."""
        floors, areas = fr.async_get(self.hass), ar.async_get(self.hass)
        changed = False
        for floor_id in [f for f in self.plans if floors.async_get_floor(f) is None]:
            del self.plans[floor_id]
            self.nodes = {n: p for n, p in self.nodes.items() if p.floor != floor_id}
            changed = True
        for floor_id, plan in self.plans.items():
            for area_id in list(plan.rooms):
                area = areas.async_get_area(area_id)
                if area is None or area.floor_id != floor_id:
                    del plan.rooms[area_id]
                    changed = True
        return changed

    # the edits

    async def async_set_plan(
        self, floor_id: str, image: str, width_m: float, height_m: float, elevation: float | None
    ) -> Plan:
        floor = fr.async_get(self.hass).async_get_floor(floor_id)
        if floor is None:
            raise invalid("unknown_floor", self._rejected, floor_id=floor_id)
        url = await self._async_image_url(image)
        old = self.plans.get(floor_id)
        plan = Plan(
            url,
            width_m,
            height_m,
            elevation if elevation is not None else (floor.level or 0) * FLOOR_HEIGHT_M,
            dict(old.rooms) if old else {},
        )
        placed = [p for o in plan.rooms.values() for p in o]
        placed += [(n.x, n.y) for n in self.nodes.values() if n.floor == floor_id]
        if any(not plan.inside(x, y) for x, y in placed):
            raise invalid("plan_too_small", self._rejected, floor=floor.name)
        self.plans[floor_id] = plan
        await self._async_changed()
        return plan

    async def async_set_room(self, area_id: str, outline: Sequence[tuple[float, float]]) -> None:
        area = ar.async_get(self.hass).async_get_area(area_id)
        if area is None:
            raise invalid("unknown_area", self._rejected, area_id=area_id)
        plan = self.plans.get(area.floor_id or "")
        if plan is None:
            raise invalid("no_floor_plan", self._rejected, name=area.name)
        if not outline:
            plan.rooms.pop(area_id, None)
        elif len(outline) < 3 or abs(_area(outline)) < 1e-6:
            raise invalid("outline_too_short", self._rejected, area=area.name)
        elif not all(plan.inside(x, y) for x, y in outline):
            raise invalid("outside_plan", self._rejected, name=area.name)
        else:
            plan.rooms[area_id] = [(float(x), float(y)) for x, y in outline]
        await self._async_changed()

    async def async_set_node(self, node_id: str, name: str, position: NodePosition | None) -> None:
        if position is None:
            self.nodes.pop(node_id, None)
        else:
            plan = self.plans.get(position.floor)
            if plan is None:
                floor = fr.async_get(self.hass).async_get_floor(position.floor)
                raise invalid(
                    "no_floor_plan", self._rejected, name=floor.name if floor else position.floor
                )
            if not plan.inside(position.x, position.y):
                raise invalid("outside_plan", self._rejected, name=name)
            old = self.nodes.get(node_id)
            if old is not None:  # moved: its calibration stays until calibrated again
                position.offset_db = old.offset_db
            self.nodes[node_id] = position
        await self._async_changed()

    async def async_set_offsets(self, offsets: Mapping[str, float]) -> None:
        """Calibrated receiver offsets (dB) of placed nodes."""
        for node_id, offset in offsets.items():
            if node_id in self.nodes:
                self.nodes[node_id].offset_db = round(float(offset), 2)
        await self._async_changed()

    async def _async_image_url(self, image: str) -> str:
        if image.startswith(IMAGE_UPLOAD):
            image_id = image.removeprefix(IMAGE_UPLOAD)
            collection = self.hass.data.get("image_upload")
            if collection is None or image_id not in getattr(collection, "data", {}):
                raise invalid("invalid_image", self._rejected, image=image)
            return f"/api/image/serve/{image_id}/original"
        name = image.removeprefix(LOCAL)
        if image.startswith(LOCAL) and _plain(name):
            path = pathlib.Path(self.hass.config.path("www", name))
            problem = await self.hass.async_add_executor_job(_image_problem, path)
            if problem is not None:
                raise invalid(problem, self._rejected, image=image, cap_mb=MAX_IMAGE_BYTES >> 20)
            return image
        raise invalid("invalid_image", self._rejected, image=image)

    # what the placement builds its radio map from

    def radio_plan(self, floors: Mapping[str, float] | None = None) -> FloorPlan | None:
        """The plans as the radio map takes them; None without MIN_PLACED_NODES placed nodes or
        a room outline (the rooms alone are used then)."""
        nodes = [
            PlanNode(n, p.floor, p.x, p.y, p.height, p.offset_db)
            for n, p in sorted(self.nodes.items())
            if p.floor in self.plans
        ]
        rooms = [
            PlanRoom(area_id, floor_id, tuple(outline))
            for floor_id, plan in sorted(self.plans.items())
            for area_id, outline in sorted(plan.rooms.items())
        ]
        if len(nodes) < MIN_PLACED_NODES or not rooms:
            return None
        elevations = {f: p.elevation_m for f, p in self.plans.items()}
        return FloorPlan(dict(floors or {}) | elevations, rooms, nodes)

    def planned_rooms(self) -> set[str]:
        """The areas outlined on a plan."""
        return {a for p in self.plans.values() for a in p.rooms}

    def room_centre(self, area_id: str) -> tuple[str, float, float, float] | None:
        """The floor, centre and radius (metres) of a room on a plan."""
        for floor_id, plan in self.plans.items():
            outline = plan.rooms.get(area_id)
            if outline:
                x, y = _centroid(outline)
                radius = max(math.dist((x, y), p) for p in outline)
                return floor_id, x, y, radius
        return None

    def summary(self) -> dict[str, Any]:
        """Counts for diagnostics (no images)."""
        return {
            "floors": {
                f: {
                    "size_m": [p.width_m, p.height_m],
                    "elevation_m": p.elevation_m,
                    "rooms": len(p.rooms),
                    "nodes": sum(1 for n in self.nodes.values() if n.floor == f),
                    "image": "upload" if p.image.startswith("/api/image/") else "local",
                }
                for f, p in self.plans.items()
            },
            "placed_nodes": len(self.nodes),
            "calibrated_nodes": sum(1 for n in self.nodes.values() if n.offset_db),
            "usable": self.radio_plan() is not None,
        }


def _plain(name: str) -> bool:
    """A path inside /config/www: relative, without `..` or backslashes."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and "\\" not in name and ".." not in parts


def _image_problem(path: pathlib.Path) -> str | None:
    """Why a file under /config/www is no floor-plan image (None when it is one)."""
    if not path.is_file():
        return "invalid_image"
    if path.stat().st_size > MAX_IMAGE_BYTES:
        return "image_too_large"
    with path.open("rb") as file:
        head = file.read(512)
    if head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    return None if b"<svg" in head.lower() else "invalid_image"


def _area(points: Sequence[tuple[float, float]]) -> float:
    return 0.5 * sum(
        a[0] * b[1] - b[0] * a[1] for a, b in zip(points, [*points[1:], points[0]], strict=True)
    )


def _centroid(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    area = _area(points)
    if abs(area) < 1e-9:
        return sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)
    cx = cy = 0.0
    for a, b in zip(points, [*points[1:], points[0]], strict=True):
        cross = a[0] * b[1] - b[0] * a[1]
        cx += (a[0] + b[0]) * cross
        cy += (a[1] + b[1]) * cross
    return cx / (6 * area), cy / (6 * area)
