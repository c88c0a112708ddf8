"""The asset list Home Assistant owns: one config subentry per asset, sent to every edge node.

The list is versioned. Its version moves (and is saved) whenever the list itself changes, and it
goes to every node as an all-or-nothing `assets` message (PROTOCOL.md), cut into parts when it
would not fit one payload. A node answers on its retained `assets/result` with the version it
applies; a node that comes online (a new node, or one that was away) and does not apply the
current version gets the list again. The messages are not retained: IRKs stay off the broker's
disk, and only Home Assistant's MQTT user and the node itself can read the node's `assets` topic
(see the ACL example).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import probatio as vol
from homeassistant.config_entries import (
    SIGNAL_CONFIG_ENTRY_CHANGED,
    ConfigEntry,
    ConfigEntryChange,
)
from homeassistant.core import callback
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.storage import Store
from homeassistant.util import slugify

from . import protocol
from .const import DOMAIN
from .fleet import Fleet
from .models import NodeState

if TYPE_CHECKING:
    from .hub import AssetTrackerConfigEntry

_LOGGER = logging.getLogger(__name__)

SUBENTRY_ASSET: Final = "asset"
STORE_VERSION: Final = 1
# a part stays well below the payload cap, whatever the names and matches hold
PART_BYTES: Final = 200_000

# the form's fields, flat; thresholds are in a section of their own
CONF_ASSET_ID: Final = "asset_id"
CONF_NAME: Final = "name"
CONF_TYPE: Final = "type"
CONF_MAC: Final = "mac"
CONF_IBEACON_UUID: Final = "ibeacon_uuid"
CONF_IBEACON_MAJOR: Final = "ibeacon_major"
CONF_IBEACON_MINOR: Final = "ibeacon_minor"
CONF_EDDYSTONE_NAMESPACE: Final = "eddystone_namespace"
CONF_EDDYSTONE_INSTANCE: Final = "eddystone_instance"
CONF_IRK: Final = "irk"
CONF_THRESHOLDS: Final = "thresholds"
MATCH_FIELDS: Final = (
    CONF_MAC,
    CONF_IBEACON_UUID,
    CONF_IBEACON_MAJOR,
    CONF_IBEACON_MINOR,
    CONF_EDDYSTONE_NAMESPACE,
    CONF_EDDYSTONE_INSTANCE,
    CONF_IRK,
)
THRESHOLD_FIELDS: Final = tuple(
    f"{metric}_{end}" for metric in protocol.THRESHOLD_METRICS for end in ("min", "max")
)

_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX = re.compile(r"[0-9a-f]+")


class FormError(ValueError):
    """A form value that cannot be used: `field` is where to show it, `key` its translation."""

    def __init__(self, field: str, key: str) -> None:
        super().__init__(f"{field}: {key}")
        self.field = field
        self.key = key


# --- the form <-> the wire asset ---


def _text(user_input: Mapping[str, Any], key: str) -> str:
    return str(user_input.get(key) or "").strip().lower()


def _hex(user_input: Mapping[str, Any], key: str, digits: int) -> str:
    text = _text(user_input, key).replace("-", "").replace(":", "").replace(" ", "")
    if len(text) != digits or not _HEX.fullmatch(text):
        raise FormError(key, f"invalid_{key}")
    return text


def _match(user_input: Mapping[str, Any]) -> dict[str, Any]:
    match: dict[str, Any] = {}
    if mac := _text(user_input, CONF_MAC).replace("-", ":"):
        if not _MAC.fullmatch(mac):
            raise FormError(CONF_MAC, "invalid_mac")
        match["mac"] = mac
    uuid = _text(user_input, CONF_IBEACON_UUID)
    major, minor = user_input.get(CONF_IBEACON_MAJOR), user_input.get(CONF_IBEACON_MINOR)
    if uuid or major is not None or minor is not None:
        if not _UUID.fullmatch(uuid):
            raise FormError(CONF_IBEACON_UUID, "invalid_ibeacon_uuid")
        if major is None or minor is None:
            raise FormError(CONF_IBEACON_MAJOR, "invalid_ibeacon_numbers")
        match["ibeacon"] = {"uuid": uuid, "major": int(major), "minor": int(minor)}
    if _text(user_input, CONF_EDDYSTONE_NAMESPACE) or _text(user_input, CONF_EDDYSTONE_INSTANCE):
        match["eddystone"] = {
            "namespace": _hex(user_input, CONF_EDDYSTONE_NAMESPACE, 20),
            "instance": _hex(user_input, CONF_EDDYSTONE_INSTANCE, 12),
        }
    if _text(user_input, CONF_IRK):
        match["irk"] = _hex(user_input, CONF_IRK, 32)
    if not match:
        raise FormError("base", "no_match")
    return match


def _thresholds(section: Mapping[str, Any]) -> dict[str, float]:
    values = {k: float(v) for k, v in section.items() if k in THRESHOLD_FIELDS and v is not None}
    for key, value in values.items():
        low, high = protocol.METRIC_RANGES[key.rsplit("_", 1)[0]]
        if not low <= value <= high:
            raise FormError(CONF_THRESHOLDS, "threshold_range")
    for metric in protocol.THRESHOLD_METRICS:
        low_value, high_value = values.get(f"{metric}_min"), values.get(f"{metric}_max")
        if low_value is not None and high_value is not None and low_value > high_value:
            raise FormError(CONF_THRESHOLDS, "threshold_order")
    return values


def asset_from_form(
    user_input: Mapping[str, Any], asset_id: str, others: list[dict[str, Any]]
) -> dict[str, Any]:
    """The wire asset a form describes; FormError for the first problem. `others` are the
    assets already on the list (a second asset with the same match is refused)."""
    name = str(user_input.get(CONF_NAME) or "").strip()
    if not name or len(name) > 128:
        raise FormError(CONF_NAME, "invalid_name")
    match = _match(user_input)
    asset = {
        "id": asset_id,
        "name": name,
        "type": user_input.get(CONF_TYPE) or "tag",
        "match": match,
        "thresholds": _thresholds(user_input.get(CONF_THRESHOLDS) or {}),
    }
    taken = set().union(*(match_keys(o["match"]) for o in others))
    if match_keys(match) & taken:
        raise FormError("base", "duplicate_match")
    # the shared codec has the last word: what it refuses, no node would take
    try:
        protocol.ASSET_ITEM(asset)
    except vol.Invalid as err:
        raise FormError("base", "invalid_asset") from err
    return asset


def form_from_asset(asset: Mapping[str, Any]) -> dict[str, Any]:
    """A stored asset as the form's values (to edit it)."""
    match = asset["match"]
    values: dict[str, Any] = {CONF_NAME: asset["name"], CONF_TYPE: asset["type"]}
    if match.get("mac"):
        values[CONF_MAC] = match["mac"]
    if beacon := match.get("ibeacon"):
        values |= {
            CONF_IBEACON_UUID: beacon["uuid"],
            CONF_IBEACON_MAJOR: beacon["major"],
            CONF_IBEACON_MINOR: beacon["minor"],
        }
    if eddystone := match.get("eddystone"):
        values |= {
            CONF_EDDYSTONE_NAMESPACE: eddystone["namespace"],
            CONF_EDDYSTONE_INSTANCE: eddystone["instance"],
        }
    if match.get("irk"):
        values[CONF_IRK] = match["irk"]
    values[CONF_THRESHOLDS] = dict(asset.get("thresholds") or {})
    return values


SENSOR_FORMATS: Final = ("bthome", "ruuvi", "xiaomi", "govee")


class Heard(Protocol):
    """A tag a node hears (adoption.Candidate, frozen), as the form needs it."""

    @property
    def address(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def match(self) -> dict[str, Any] | None: ...


def adopted_form(tag: Heard) -> dict[str, Any]:
    """The form's values for a tag picked from what the nodes hear: its advertised name (else its
    format and the end of its address), its match, a sensor type for the sensor formats."""
    values = form_from_asset(
        {
            "name": tag.name or f"{tag.format} {tag.address[-5:]}",
            "type": "sensor" if tag.format in SENSOR_FORMATS else "tag",
            "match": tag.match or {},
        }
    )
    values[CONF_THRESHOLDS] = {}
    return values


def match_keys(match: Mapping[str, Any]) -> set[tuple[Any, ...]]:
    """The identities an advert is matched by: two assets must not share one."""
    keys: set[tuple[Any, ...]] = set()
    if match.get("mac"):
        keys.add(("mac", match["mac"]))
    if beacon := match.get("ibeacon"):
        keys.add(("ibeacon", beacon["uuid"], beacon["major"], beacon["minor"]))
    if eddystone := match.get("eddystone"):
        keys.add(("eddystone", eddystone["namespace"], eddystone["instance"]))
    if match.get("irk"):
        keys.add(("irk", match["irk"]))
    return keys


def new_asset_id(name: str, taken: set[str]) -> str:
    """A stable id from the name the asset was added with (a YAML asset of that id is replaced)."""
    base = (slugify(name) or "asset")[:60]
    asset_id, number = base, 2
    while asset_id in taken:
        asset_id, number = f"{base}_{number}", number + 1
    return asset_id


def entry_assets(entry: AssetTrackerConfigEntry) -> list[dict[str, Any]]:
    """The wire list: every asset subentry, in a stable order."""
    assets = [dict(s.data) for s in entry.get_subentries_of_type(SUBENTRY_ASSET)]
    return sorted(assets, key=lambda a: str(a["id"]))


def split(assets: list[dict[str, Any]], limit: int = PART_BYTES) -> list[list[dict[str, Any]]]:
    """Parts of the list, each encoding to at most about `limit` bytes; at least one part."""
    parts: list[list[dict[str, Any]]] = [[]]
    size = 0
    for asset in assets:
        length = len(json.dumps(asset, separators=(",", ":"), ensure_ascii=False)) + 1
        if parts[-1] and size + length > limit:
            parts.append([])
            size = 0
        parts[-1].append(asset)
        size += length
    return parts


def _digest(assets: list[dict[str, Any]]) -> str:
    text = json.dumps(assets, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class AssetDistribution:
    """Keeps every node on the current version of the list."""

    def __init__(self, fleet: Fleet, entry: AssetTrackerConfigEntry) -> None:
        self._fleet = fleet
        self._entry = entry
        self._store: Store[dict[str, Any]] = Store(
            fleet.hass, STORE_VERSION, f"{DOMAIN}.{fleet.entry_id}.assets"
        )
        self.version = 0  # 0: no list yet; nodes track their own YAML assets only
        self.assets: list[dict[str, Any]] = []
        self._digest = _digest([])

    async def async_start(self) -> None:
        saved = await self._store.async_load() or {}
        self.version = int(saved.get("version", 0))
        self._digest = str(saved.get("digest", self._digest))
        await self._async_take(entry_assets(self._entry))

    @callback
    def listen(self) -> Callable[[], None]:
        """Follows the subentries (added, edited, removed) without reloading the entry (an
        update listener would stop the options flow from reloading it)."""
        return async_dispatcher_connect(
            self._fleet.hass, SIGNAL_CONFIG_ENTRY_CHANGED, self._entry_changed
        )

    @callback
    def _entry_changed(self, change: ConfigEntryChange, entry: ConfigEntry) -> None:
        if change is ConfigEntryChange.UPDATED and entry.entry_id == self._fleet.entry_id:
            self._fleet.hass.async_create_task(
                self._async_entry_updated(entry), f"{DOMAIN} asset list"
            )

    async def _async_entry_updated(self, entry: AssetTrackerConfigEntry) -> None:
        if await self._async_take(entry_assets(entry)):
            for node in list(self._fleet.nodes.values()):
                if node.online:
                    await self.async_send(node.node_id)

    async def _async_take(self, assets: list[dict[str, Any]]) -> bool:
        """A new version when the list differs from the one the version was given to."""
        digest = _digest(assets)
        self.assets = assets
        if digest == self._digest:
            return False
        self.version += 1
        self._digest = digest
        await self._store.async_save({"version": self.version, "digest": digest})
        _LOGGER.info("asset list version %d: %d assets", self.version, len(assets))
        return True

    async def async_send(self, node_id: str) -> None:
        """The whole list to one node, in as many parts as it takes."""
        if self.version == 0:
            return
        command_id = secrets.token_hex(4)
        parts = split(self.assets)
        for index, part in enumerate(parts):
            message = {
                "v": 1,
                "node": node_id,
                "id": command_id,
                "version": self.version,
                "part": index,
                "parts": len(parts),
                "hlc": list(self._fleet.clock.tick()),
                "assets": part,
            }
            await self._fleet.publish("assets", node_id, message)

    # what the nodes say

    def on_status(self, node_id: str, decoded: protocol.Decoded) -> None:
        """A node online that does not apply the current list gets it, at every birth: a node
        publishes its first birth of a session before it subscribes (a list sent in answer to
        that one is lost), and again once it sees the host online, subscribed by then. A node
        that has the version already answers without changing anything."""
        node = self._fleet.nodes.get(node_id)
        if node is not None and node.online and node.assets_version != self.version:
            self._schedule_send(node_id)

    def on_result(self, node_id: str, decoded: protocol.Decoded) -> None:
        msg = decoded.message
        node = self._fleet.node(node_id)
        node.assets_version = msg["applied"]
        node.assets_result = msg
        self._fleet.node_changed(node)
        self._repair(node, msg)
        if msg["applied"] > self.version:
            # the node holds a list newer than ours (our store was restored from a backup):
            # ours goes above it, so every node takes it again
            self.version = msg["applied"]
            self._digest = ""
            self._fleet.hass.async_create_task(self._async_resync())

    async def _async_resync(self) -> None:
        await self._async_take(self.assets)
        for node in list(self._fleet.nodes.values()):
            if node.online:
                await self.async_send(node.node_id)

    def _schedule_send(self, node_id: str) -> None:
        self._fleet.hass.async_create_task(
            self.async_send(node_id), f"{DOMAIN} asset list to {node_id}"
        )

    def _repair(self, node: NodeState, msg: dict[str, Any]) -> None:
        issue_id = f"{self._fleet.root}_assets_rejected_{node.node_id}"
        if msg["ok"]:
            ir.async_delete_issue(self._fleet.hass, DOMAIN, issue_id)
            return
        ir.async_create_issue(
            self._fleet.hass,
            DOMAIN,
            issue_id,
            is_fixable=False,
            severity=ir.IssueSeverity.ERROR,
            translation_key="assets_rejected",
            translation_placeholders={
                "node": node.name,
                "version": str(msg["version"]),
                "applied": str(msg["applied"]),
                "errors": "; ".join(msg["errors"]) or "-",
            },
        )

    def summary(self) -> dict[str, Any]:
        """For diagnostics (redacted there): the version, the list, what each node applies."""
        return {
            "version": self.version,
            "assets": self.assets,
            "nodes": {
                node_id: {"applied": n.assets_version, "result": n.assets_result}
                for node_id, n in self._fleet.nodes.items()
            },
        }
