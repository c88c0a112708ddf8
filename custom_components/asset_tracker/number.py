"""Number entities: the numeric runtime settings of each edge node (remote configuration)."""

from __future__ import annotations

from homeassistant.components.number import NumberEntity
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import DOMAIN
from .entity import async_track_devices
from .hub import AssetTrackerConfigEntry, AssetTrackerHub
from .remote_settings import NUMBERS, NumberSettingDescription, RemoteSettingEntity

PARALLEL_UPDATES = 1  # one command at a time per platform keeps settings versions in order


async def async_setup_entry(
    hass: HomeAssistant,
    entry: AssetTrackerConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up a number per numeric setting on every node."""
    hub = entry.runtime_data.hub
    for unsubscribe in async_track_devices(
        hub,
        async_add_entities,
        node_entities=lambda n: [SettingNumber(hub, n, d) for d in NUMBERS],
    ):
        entry.async_on_unload(unsubscribe)


class SettingNumber(RemoteSettingEntity, NumberEntity):
    """A numeric setting; the state is the value the node applied."""

    entity_description: NumberSettingDescription

    def __init__(
        self, hub: AssetTrackerHub, node_id: str, description: NumberSettingDescription
    ) -> None:
        super().__init__(hub, node_id, description.key)
        self.entity_description = description
        self.settings = (description.setting,)

    @property
    def native_value(self) -> float | None:
        value = self.reported(self.entity_description.setting)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return value

    async def async_set_native_value(self, value: float) -> None:
        wire: float | int = value
        if self.entity_description.integer:
            if value != int(value):
                raise ServiceValidationError(
                    translation_domain=DOMAIN,
                    translation_key="whole_numbers",
                    translation_placeholders={"setting": self.entity_description.setting},
                )
            wire = int(value)
        await self.async_apply({self.entity_description.setting: wire})
