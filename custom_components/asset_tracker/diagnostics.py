"""Diagnostics: fleet state and counters, with MAC addresses and identities redacted."""

from __future__ import annotations

import re
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .hub import AssetTrackerConfigEntry

MAC = re.compile(r"(?i)\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b")
TO_REDACT = {"password", "username", "token", "irk", "uuid"}


def _redact_macs(value: Any) -> Any:
    if isinstance(value, str):
        return MAC.sub("**REDACTED_MAC**", value)
    if isinstance(value, dict):
        return {_redact_macs(k): _redact_macs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_macs(v) for v in value]
    return value


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: AssetTrackerConfigEntry
) -> dict[str, Any]:
    """Everything needed to debug a fleet, and nothing that identifies a person's devices."""
    hub = entry.runtime_data.hub
    data = {
        "entry": {
            "data": dict(entry.data),
            "options": dict(entry.options),
            "subentries": [dict(s.data) for s in entry.subentries.values()],
        },
        "asset_list": hub.asset_list.summary(),
        "adoption": hub.adoption.summary(),
        "counters": {
            "applied": hub.applied,
            "duplicates": hub.dedupe.duplicates,
            "reused": hub.dedupe.reused,
            "refused": hub.dedupe.refused,
            "late": hub.late,
            "invalid_events": hub.invalid_events,
            "rejected": dict(hub.rejected),
            "clock_rejected": hub.clock.rejected,
        },
        "clock": list(hub.clock.value),
        "dedupe": hub.dedupe.summary(),
        "nodes": {
            node_id: {
                "online": n.online,
                "boot": n.boot,
                "sw": n.sw,
                "settings_version": n.settings_version,
                "settings": n.settings,
                "health": n.health,
                "latency_p95_ms": n.latency.p95(),
            }
            for node_id, n in hub.nodes.items()
        },
        "assets": {a.asset_id: a.persistable() for a in hub.assets.values()},
        "location": hub.placement.summary(),
        "floor_plans": hub.floor_plans.summary(),
        "ha_scanners": hub.scanners.summary() if hub.scanners else {"enabled": False},
    }
    return _redact_macs(async_redact_data(data, TO_REDACT))  # type: ignore[no-any-return]
