"""Switch entities: the anomaly rules of each edge node, on or off (remote configuration)."""

from __future__ import annotations

from typing import Any

from homeassistant.components.switch import SwitchEntity
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .entity import async_track_devices
from .hub import AssetTrackerConfigEntry, AssetTrackerHub
from .remote_settings import SWITCHES, RemoteSettingEntity, SwitchSettingDescription

PARALLEL_UPDATES = 1


async def async_setup_entry(
    hass: HomeAssistant,
    entry: AssetTrackerConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up a switch per anomaly rule on every node."""
    hub = entry.runtime_data.hub
    for unsubscribe in async_track_devices(
        hub,
        async_add_entities,
        node_entities=lambda n: [RuleSwitch(hub, n, d) for d in SWITCHES],
    ):
        entry.async_on_unload(unsubscribe)


class RuleSwitch(RemoteSettingEntity, SwitchEntity):
    """An anomaly rule; on when the node reports it enabled."""

    entity_description: SwitchSettingDescription

    def __init__(
        self, hub: AssetTrackerHub, node_id: str, description: SwitchSettingDescription
    ) -> None:
        super().__init__(hub, node_id, description.key)
        self.entity_description = description
        self.settings = (description.setting,)

    @property
    def is_on(self) -> bool | None:
        value = self.reported(self.entity_description.setting)
        return value if isinstance(value, bool) else None

    async def async_turn_on(self, **kwargs: Any) -> None:
        await self.async_apply({self.entity_description.setting: True})

    async def async_turn_off(self, **kwargs: Any) -> None:
        await self.async_apply({self.entity_description.setting: False})
