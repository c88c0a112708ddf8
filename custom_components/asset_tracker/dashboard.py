"""The "Asset Tracker" dashboard every user gets without writing YAML.

A storage-mode Lovelace dashboard whose configuration is generated from the device and entity
registries each time it is opened, so new assets and nodes appear on their own. As soon as the user
edits it in the UI ("take control"), the saved configuration wins and nothing is generated any more;
deleting the saved configuration (raw editor, empty) brings the generated one back.

Views: fleet (assets by area, every asset as a tile), alerts (each active anomaly once, with an
acknowledge button, and recent anomalies), one drill-down subview per asset (area, signal and
readings history) and edge health (per node outbox, latency, clock, connectivity).

With floor plans (`floorplan.py`), a floor-plan view: per floor its image, the rooms, the nodes
with their health and the assets where they are, drawn live by a small card the integration serves
(`frontend/floor-plan-card.js`); the configuration it draws is generated here like the rest.

No world map: BLE tags carry no coordinates, so it would stay empty. Graph windows fit what they
show: a few hours for signals and readings, which change by the minute, a day for histories,
so a fresh install is not a one-pixel sliver at the edge of a week-long axis.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from homeassistant.components import frontend
from homeassistant.components.http.server import StaticPathConfig
from homeassistant.components.lovelace.const import LOVELACE_DATA, ConfigNotFound
from homeassistant.components.lovelace.dashboard import LovelaceStorage
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import EVENT_LOVELACE_UPDATED
from homeassistant.core import CALLBACK_TYPE, Event, HomeAssistant, callback
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import floor_registry as fr
from homeassistant.helpers.debounce import Debouncer
from homeassistant.helpers.json import json_bytes, json_fragment
from homeassistant.util import slugify

_LOGGER = logging.getLogger(__name__)

DOMAIN: Final = "asset_tracker"
URL_PATH: Final = "asset-tracker"
TITLE: Final = "Asset Tracker"
ICON: Final = "mdi:radar"
ACKNOWLEDGE_SERVICE: Final = f"{DOMAIN}.acknowledge"
SIGNAL_HOURS: Final = 3  # RSSI, distance, readings, outbox and latency
HISTORY_HOURS: Final = 24  # area, presence, anomaly and battery timelines, logbooks
CARD_URL: Final = f"/{DOMAIN}/floor-plan-card.js"
CARD_FILE: Final = pathlib.Path(__file__).parent / "frontend" / "floor-plan-card.js"
CARD_TYPE: Final = "custom:asset-tracker-floor-plan"
READING_CLASSES: Final = frozenset(
    {
        "temperature",
        "humidity",
        "pressure",
        "atmospheric_pressure",
        "voltage",
        "moisture",
        "illuminance",
        "carbon_dioxide",
        "pm25",
    }
)
NODE_ROLE_ORDER: Final = (
    "connectivity",
    "outbox_depth",
    "oldest_unacked",
    "latency",
    "clock_offset",
    "dropped",
    "replay_rate",
    "events_per_minute",
    "anomaly_rate",
)


@dataclass
class DeviceEntities:
    """The entities of one device, by role (see `entity_role`)."""

    device: dr.DeviceEntry | Any
    roles: dict[str, str] = field(default_factory=dict)
    readings: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.device.name_by_user or self.device.name or self.device.id

    @property
    def is_node(self) -> bool:
        return "connectivity" in self.roles

    @property
    def is_asset(self) -> bool:
        return not self.is_node and bool(
            {"tracker", "area", "presence", "event"} & self.roles.keys()
        )


_DOMAIN_ROLES: Final = {"device_tracker": "tracker", "event": "event"}
# (needle in the translation key or unique id, role), first match wins
_BINARY_KEYS: Final = (("anomal", "anomaly"), ("presen", "presence"))
_BINARY_CLASSES: Final = {
    "connectivity": "connectivity",
    "problem": "anomaly",
    "presence": "presence",
    "occupancy": "presence",
}
_SENSOR_KEYS: Final = (
    ("outbox_depth", "outbox_depth"),
    ("oldest", "oldest_unacked"),
    ("latency", "latency"),
    ("clock_offset", "clock_offset"),
    ("dropped", "dropped"),
    ("replay", "replay_rate"),
    ("events_per_min", "events_per_minute"),
    ("anomaly_rate", "anomaly_rate"),
    ("dwell", "dwell"),
    ("visits", "visits"),
    ("last_seen", "last_seen"),
    ("rssi", "rssi"),
    ("distance", "distance"),
    ("reading", "reading"),
)
_SENSOR_CLASSES: Final = {
    "battery": "battery",
    "signal_strength": "rssi",
    "distance": "distance",
    **dict.fromkeys(READING_CLASSES, "reading"),
}


def entity_role(entry: er.RegistryEntry) -> str | None:
    """What an entity shows, from its domain, translation key and device class."""
    key = (entry.translation_key or entry.unique_id or "").lower()
    dclass = entry.device_class or entry.original_device_class
    if entry.domain in _DOMAIN_ROLES:
        return _DOMAIN_ROLES[entry.domain]
    if entry.domain == "binary_sensor":
        if dclass == "connectivity":
            return "connectivity"
        return _first(key, _BINARY_KEYS) or _BINARY_CLASSES.get(dclass or "")
    if entry.domain != "sensor":
        return None
    area = "area" if key == "area" or key.endswith("_area") else None
    return _first(key, _SENSOR_KEYS) or area or _SENSOR_CLASSES.get(dclass or "")


def _first(key: str, table: tuple[tuple[str, str], ...]) -> str | None:
    return next((role for needle, role in table if needle in key), None)


def collect(hass: HomeAssistant, entry_id: str) -> list[DeviceEntities]:
    """Devices of the config entry with their enabled entities, sorted by name."""
    devices = dr.async_get(hass)
    by_device: dict[str, DeviceEntities] = {}
    for ent in er.async_entries_for_config_entry(er.async_get(hass), entry_id):
        if ent.disabled_by is not None or ent.device_id is None:
            continue
        device = devices.async_get(ent.device_id)
        if device is None or _orphaned(hass, ent.entity_id):
            continue
        item = by_device.setdefault(device.id, DeviceEntities(device))
        role = entity_role(ent)
        if role == "reading":
            item.readings.append(ent.entity_id)
        elif role is not None and role not in item.roles:
            item.roles[role] = ent.entity_id
        else:
            item.others.append(ent.entity_id)
    return sorted(by_device.values(), key=lambda d: d.name.lower())


def _orphaned(hass: HomeAssistant, entity_id: str) -> bool:
    """An entity only restored from the registry: nothing provides it any more (a battery
    sensor made for a tag before batteries were made on their first value)."""
    state = hass.states.get(entity_id)
    return state is not None and bool(state.attributes.get("restored"))


def asset_path(asset: DeviceEntities) -> str:
    return f"asset-{slugify(asset.name, separator='-') or asset.device.id}"


def build_dashboard(hass: HomeAssistant, entry_ids: str | Sequence[str]) -> dict[str, Any]:
    """The whole dashboard configuration for the devices of the fleets' config entries (a site
    too large for one entry is split across several, by base topic: one dashboard shows all)."""
    ids = [entry_ids] if isinstance(entry_ids, str) else list(entry_ids)
    per_entry = {entry_id: collect(hass, entry_id) for entry_id in ids}
    devices = sorted(
        (d for found in per_entry.values() for d in found), key=lambda d: d.name.lower()
    )
    assets = [d for d in devices if d.is_asset]
    nodes = [d for d in devices if d.is_node]
    plans = floor_plan_view(
        [
            card
            for entry_id, found in per_entry.items()
            for card in floor_plan_cards(
                hass,
                entry_id,
                [d for d in found if d.is_asset],
                [d for d in found if d.is_node],
            )
        ]
    )
    return {
        "title": TITLE,
        "views": [
            fleet_view(hass, assets, nodes),
            *([plans] if plans else []),
            alerts_view(assets, nodes),
            edge_health_view(nodes),
            *(asset_view(asset) for asset in assets),
        ],
    }


def _asset_entity(asset: DeviceEntities) -> str:
    for role in ("tracker", "area", "presence", "event"):
        if role in asset.roles:
            return asset.roles[role]
    raise ValueError(asset.name)  # unreachable: is_asset requires one of these


def _area_names(
    hass: HomeAssistant, assets: list[DeviceEntities], nodes: list[DeviceEntities]
) -> list[str]:
    """Areas an asset can be in: the nodes' Home Assistant areas and whatever the area sensors
    show now."""
    areas = ar.async_get(hass)
    names: set[str] = set()
    for node in nodes:
        if node.device.area_id and (area := areas.async_get_area(node.device.area_id)):
            names.add(area.name)
    for asset in assets:
        state = hass.states.get(asset.roles["area"]) if "area" in asset.roles else None
        if state is not None and state.state not in ("unknown", "unavailable", "", "not_home"):
            names.add(state.state)
    return sorted(names, key=str.lower)


def fleet_view(
    hass: HomeAssistant, assets: list[DeviceEntities], nodes: list[DeviceEntities]
) -> dict[str, Any]:
    cards: list[dict[str, Any]] = []
    area_sensors = [a.roles["area"] for a in assets if "area" in a.roles]
    for name in _area_names(hass, assets, nodes):
        cards.append(
            {
                "type": "entity-filter",
                "entities": area_sensors,
                "conditions": [{"condition": "state", "state": name}],
                "card": {"type": "entities", "title": name, "state_color": True},
                "show_empty": False,
            }
        )
    presence = [a.roles["presence"] for a in assets if "presence" in a.roles]
    if presence:
        cards.append(
            {
                "type": "entity-filter",
                "entities": presence,
                "conditions": [{"condition": "state", "state": "off"}],
                "card": {"type": "entities", "title": "Away"},
                "show_empty": False,
            }
        )
    tiles = [
        {
            "type": "tile",
            "entity": _asset_entity(asset),
            "name": asset.name,
            "vertical": False,
            "tap_action": {
                "action": "navigate",
                "navigation_path": f"/{URL_PATH}/{asset_path(asset)}",
            },
        }
        for asset in assets
    ]
    view_cards: list[dict[str, Any]] = [
        {"type": "heading", "heading": "Assets", "heading_style": "title"},
        {"type": "grid", "columns": 3, "square": False, "cards": tiles}
        if tiles
        else {"type": "markdown", "content": "No assets yet: start an edge node."},
        *cards,
    ]
    return {"title": "Fleet", "path": "fleet", "icon": ICON, "cards": view_cards}


def _hub(hass: HomeAssistant, entry_id: str) -> Any:
    entry = hass.config_entries.async_get_entry(entry_id)
    data = getattr(entry, "runtime_data", None) if entry else None
    return getattr(data, "hub", None)


def _floor_plans(hass: HomeAssistant, entry_id: str) -> Any:
    return getattr(_hub(hass, entry_id), "floor_plans", None)


def _placeable(hub: Any) -> list[dict[str, str]]:
    """Every edge node and Home Assistant scanner the card's editor can place."""
    found = [{"node_id": n, "name": node.name} for n, node in sorted(hub.nodes.items())]
    scanners = hub.scanners.scanners.values() if hub.scanners else ()
    found += [{"node_id": s.source_id, "name": s.name} for s in scanners]
    return found


def _node_key(node: DeviceEntities) -> str | None:
    for domain, ident in node.device.identifiers:
        parts = ident.split(":", 2) if domain == DOMAIN else []
        if len(parts) == 3 and parts[1] == "node":
            return parts[2]
    return None


def floor_plan_cards(
    hass: HomeAssistant,
    entry_id: str,
    assets: list[DeviceEntities],
    nodes: list[DeviceEntities],
) -> list[dict[str, Any]]:
    """One floor-plan card per floor with a plan of the entry."""
    plans = _floor_plans(hass, entry_id)
    if plans is None or not plans.plans:
        return []
    floors, areas = fr.async_get(hass), ar.async_get(hass)
    health = {_node_key(n): n.roles["connectivity"] for n in nodes}
    trackers = [
        {
            "name": a.name,
            "entity": a.roles["tracker"],
            "path": f"/{URL_PATH}/{asset_path(a)}",
            "device_id": a.device.id,  # what the card's calibration names the asset by
        }
        for a in assets
        if "tracker" in a.roles
    ]
    cards = []
    for floor_id, plan in sorted(
        plans.plans.items(), key=lambda item: (item[1].elevation_m, item[0])
    ):
        floor = floors.async_get_floor(floor_id)
        rooms = []
        for area_id, outline in sorted(plan.rooms.items()):
            _floor, x, y, radius = plans.room_centre(area_id)
            area = areas.async_get_area(area_id)
            rooms.append(
                {
                    "area_id": area_id,
                    "name": area.name if area else area_id,
                    "outline": [list(p) for p in outline],
                    "centre": [round(x, 2), round(y, 2)],
                    "radius": round(radius, 2),
                }
            )
        placed = [
            {
                "name": hub_name if (hub_name := _node_name(nodes, node_id)) else node_id,
                "entity": health.get(node_id),
                "x": p.x,
                "y": p.y,
            }
            for node_id, p in sorted(plans.nodes.items())
            if p.floor == floor_id
        ]
        on_floor = [
            {"area_id": a.id, "name": a.name}
            for a in sorted(areas.async_list_areas(), key=lambda a: a.name.lower())
            if a.floor_id == floor_id
        ]
        cards.append(
            {
                "type": CARD_TYPE,
                "title": floor.name if floor else floor_id,
                "entry_id": entry_id,
                "floor": floor_id,
                "image": plan.image,
                "width_m": plan.width_m,
                "height_m": plan.height_m,
                "rooms": rooms,
                "nodes": placed,
                "assets": trackers,
                "placeable": _placeable(_hub(hass, entry_id)),
                "areas": on_floor,
            }
        )
    return cards


def floor_plan_view(cards: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The floor plans of every entry in one view; None without plans."""
    if not cards:
        return None
    return {
        "title": "Floor plan",
        "path": "floor-plan",
        "icon": "mdi:floor-plan",
        "type": "panel" if len(cards) == 1 else "masonry",
        "cards": cards,
    }


def _node_name(nodes: list[DeviceEntities], node_id: str) -> str | None:
    return next((n.name for n in nodes if _node_key(n) == node_id), None)


def _acknowledge(asset: DeviceEntities) -> dict[str, Any]:
    return {
        "action": "perform-action",
        "perform_action": ACKNOWLEDGE_SERVICE,
        "data": {"device_id": asset.device.id},
        "confirmation": {"text": f"Acknowledge the anomaly of {asset.name}?"},
    }


def alerts_view(assets: list[DeviceEntities], nodes: list[DeviceEntities]) -> dict[str, Any]:
    # each active anomaly once: its tile with the acknowledge button, shown while it is on
    anomalies = [a.roles["anomaly"] for a in assets if "anomaly" in a.roles]
    cards: list[dict[str, Any]] = [
        {"type": "heading", "heading": "Active anomalies", "heading_style": "title"},
        {
            "type": "conditional",
            "conditions": [
                {"condition": "state", "entity": entity, "state_not": "on"} for entity in anomalies
            ],
            "card": {"type": "markdown", "content": "No active anomalies."},
        },
    ]
    for asset in assets:
        if "anomaly" not in asset.roles:
            continue
        cards.append(
            {
                "type": "conditional",
                "conditions": [
                    {"condition": "state", "entity": asset.roles["anomaly"], "state": "on"}
                ],
                "card": {
                    "type": "horizontal-stack",
                    "cards": [
                        {"type": "tile", "entity": asset.roles["anomaly"], "name": asset.name},
                        {
                            "type": "button",
                            "name": "Acknowledge",
                            "icon": "mdi:check-circle-outline",
                            "show_state": False,
                            "tap_action": _acknowledge(asset),
                        },
                    ],
                },
            }
        )
    history = [a.roles["event"] for a in assets if "event" in a.roles]
    history += [n.roles["connectivity"] for n in nodes]
    if history:
        cards.append(
            {
                "type": "logbook",
                "title": "Recent anomalies",
                "target": {"entity_id": history},
                "hours_to_show": HISTORY_HOURS,
            }
        )
    return {"title": "Alerts", "path": "alerts", "icon": "mdi:alert-circle-outline", "cards": cards}


def asset_view(asset: DeviceEntities) -> dict[str, Any]:
    roles = asset.roles
    summary = [
        roles[r]
        for r in (
            "tracker",
            "area",
            "presence",
            "anomaly",
            "battery",
            "last_seen",
            "dwell",
            "visits",
        )
        if r in roles
    ]
    cards: list[dict[str, Any]] = [
        {
            "type": "entities",
            "title": asset.name,
            "entities": summary + asset.readings,
            "state_color": True,
        }
    ]
    timeline = [roles[r] for r in ("area", "presence", "anomaly") if r in roles]
    if timeline:
        cards.append(
            {
                "type": "history-graph",
                "title": "Area history",
                "hours_to_show": HISTORY_HOURS,
                "entities": timeline,
            }
        )
    signal = [roles[r] for r in ("rssi", "distance") if r in roles]
    if signal:
        cards.append(
            {
                "type": "history-graph",
                "title": "Signal",
                "hours_to_show": SIGNAL_HOURS,
                "entities": signal,
            }
        )
    if asset.readings:
        cards.append(
            {
                "type": "history-graph",
                "title": "Sensor readings",
                "hours_to_show": SIGNAL_HOURS,
                "entities": asset.readings,
            }
        )
    if "battery" in roles:
        cards.append(
            {
                "type": "history-graph",
                "title": "Battery",
                "hours_to_show": HISTORY_HOURS,
                "entities": [roles["battery"]],
            }
        )
    if "event" in roles:
        cards.append(
            {
                "type": "logbook",
                "title": "Anomalies",
                "target": {"entity_id": [roles["event"]]},
                "hours_to_show": HISTORY_HOURS,
            }
        )
    return {
        "title": asset.name,
        "path": asset_path(asset),
        "icon": "mdi:tag-outline",
        "subview": True,
        "back_path": f"/{URL_PATH}/fleet",
        "cards": cards,
    }


def edge_health_view(nodes: list[DeviceEntities]) -> dict[str, Any]:
    cards: list[dict[str, Any]] = []
    for node in nodes:
        rows = [node.roles[r] for r in NODE_ROLE_ORDER if r in node.roles]
        cards.append(
            {"type": "entities", "title": node.name, "entities": rows, "state_color": True}
        )
        trend = [
            node.roles[r] for r in ("outbox_depth", "oldest_unacked", "latency") if r in node.roles
        ]
        if trend:
            cards.append(
                {
                    "type": "history-graph",
                    "title": f"{node.name} backlog and latency",
                    "hours_to_show": SIGNAL_HOURS,
                    "entities": trend,
                }
            )
    if not cards:
        cards.append({"type": "markdown", "content": "No edge node has announced itself yet."})
    return {
        "title": "Edge health",
        "path": "edge-health",
        "icon": "mdi:router-wireless",
        "cards": cards,
    }


class GeneratedDashboard(LovelaceStorage):
    """Storage-mode dashboard that falls back to the generated configuration while the user has
    saved none."""

    def __init__(self, hass: HomeAssistant, entry_ids: list[str]) -> None:
        super().__init__(
            hass,
            {
                "id": DOMAIN,
                "url_path": URL_PATH,
                "title": TITLE,
                "icon": ICON,
                "mode": "storage",
                "require_admin": False,
                "show_in_sidebar": True,
            },
        )
        self.entry_ids = entry_ids  # every fleet entry set up, in the order they were

    async def user_config(self) -> dict[str, Any] | None:
        try:
            return await super().async_load(False)
        except ConfigNotFound:
            return None

    async def async_load(self, force: bool) -> dict[str, Any]:
        return await self.user_config() or build_dashboard(self.hass, self.entry_ids)

    async def async_json(self, force: bool) -> json_fragment:
        if (saved := await self.user_config()) is not None:
            return json_fragment(json_bytes(saved))
        return json_fragment(json_bytes(build_dashboard(self.hass, self.entry_ids)))


async def _async_serve_card(hass: HomeAssistant) -> None:
    """The floor-plan card's module, served by the integration and loaded by every frontend."""
    key = f"{DOMAIN}_card_served"
    if hass.data.get(key) or hass.http is None or "frontend" not in hass.config.components:
        return
    hass.data[key] = True
    await hass.http.async_register_static_paths(
        [StaticPathConfig(CARD_URL, str(CARD_FILE), cache_headers=False)]
    )
    frontend.add_extra_js_url(hass, CARD_URL)


async def async_setup_dashboard(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """Registers the dashboard with the first fleet entry; later entries join it, so a site split
    across entries (by base topic) has one dashboard for all of them."""
    lovelace = hass.data.get(LOVELACE_DATA)
    if lovelace is None:  # no frontend in this instance: nothing to show
        return
    dashboard = lovelace.dashboards.get(URL_PATH)
    if dashboard is not None and not isinstance(dashboard, GeneratedDashboard):
        _LOGGER.debug("Dashboard %s already registered", URL_PATH)
        return
    if dashboard is None:
        await _async_serve_card(hass)
        dashboard = GeneratedDashboard(hass, [])
        lovelace.dashboards[URL_PATH] = dashboard
        frontend.async_register_built_in_panel(
            hass,
            "lovelace",
            sidebar_title=TITLE,
            sidebar_icon=ICON,
            frontend_url_path=URL_PATH,
            config={"mode": "storage"},
            require_admin=False,
        )
    dashboard.entry_ids.append(entry.entry_id)
    entry.async_on_unload(_follow(hass, entry.entry_id, lovelace, dashboard))
    if len(dashboard.entry_ids) > 1 and await dashboard.user_config() is None:
        hass.bus.async_fire(EVENT_LOVELACE_UPDATED, {"url_path": URL_PATH})


def _follow(
    hass: HomeAssistant, entry_id: str, lovelace: Any, dashboard: GeneratedDashboard
) -> CALLBACK_TYPE:
    """Open dashboards refresh when the entry's entities or floor plans change; the callback
    returned stops that when the entry unloads."""

    async def refresh() -> None:
        if await dashboard.user_config() is None:
            hass.bus.async_fire(EVENT_LOVELACE_UPDATED, {"url_path": URL_PATH})

    debouncer = Debouncer(hass, _LOGGER, cooldown=2.0, immediate=False, function=refresh)

    @callback
    def registry_changed(event: Event[er.EventEntityRegistryUpdatedData]) -> None:
        if event.data["action"] != "update":
            debouncer.async_schedule_call()

    unlisten = hass.bus.async_listen(er.EVENT_ENTITY_REGISTRY_UPDATED, registry_changed)
    plans = _floor_plans(hass, entry_id)
    unlisten_plans = plans.add_listener(debouncer.async_schedule_call) if plans else None

    @callback
    def remove() -> None:
        unlisten()
        if unlisten_plans is not None:
            unlisten_plans()
        debouncer.async_cancel()
        _leave(hass, lovelace, dashboard, entry_id)

    return remove


@callback
def _leave(
    hass: HomeAssistant, lovelace: Any, dashboard: GeneratedDashboard, entry_id: str
) -> None:
    """An entry unloads: the dashboard shows the others, and goes with the last."""
    if entry_id in dashboard.entry_ids:
        dashboard.entry_ids.remove(entry_id)
    if dashboard.entry_ids:
        hass.bus.async_fire(EVENT_LOVELACE_UPDATED, {"url_path": URL_PATH})
    elif lovelace.dashboards.get(URL_PATH) is dashboard:
        lovelace.dashboards.pop(URL_PATH)
        frontend.async_remove_panel(hass, URL_PATH, warn_if_unknown=False)
