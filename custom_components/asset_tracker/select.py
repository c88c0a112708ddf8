"""Select entity: the delivery profile of each edge node (remote configuration).

A profile sets the batch window and the batch size together, in one all-or-nothing command:
`realtime` sends routine telemetry within 100 ms, `balanced` is the default, `low_power` sends
at most every 10 s (fewer radio wake-ups and broker messages). Critical events are never batched.
Any other combination the node reports shows as `custom`.
"""

from __future__ import annotations

from typing import Final

from homeassistant.components.select import SelectEntity, SelectEntityDescription
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import DOMAIN
from .entity import async_track_devices
from .hub import AssetTrackerConfigEntry, AssetTrackerHub
from .remote_settings import RemoteSettingEntity

PARALLEL_UPDATES = 1
WINDOW: Final = "batching.window_ms"
SIZE: Final = "batching.max_events"
PROFILES: Final = {
    "realtime": {WINDOW: 100, SIZE: 50},
    "balanced": {WINDOW: 1000, SIZE: 200},
    "low_power": {WINDOW: 10000, SIZE: 500},
}
CUSTOM: Final = "custom"


async def async_setup_entry(
    hass: HomeAssistant,
    entry: AssetTrackerConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up the delivery profile select on every node."""
    hub = entry.runtime_data.hub
    for unsubscribe in async_track_devices(
        hub, async_add_entities, node_entities=lambda n: [DeliveryProfile(hub, n)]
    ):
        entry.async_on_unload(unsubscribe)


class DeliveryProfile(RemoteSettingEntity, SelectEntity):
    """Batch window and size as one choice."""

    settings = (WINDOW, SIZE)

    def __init__(self, hub: AssetTrackerHub, node_id: str) -> None:
        super().__init__(hub, node_id, "delivery_profile")
        self.entity_description = SelectEntityDescription(
            key="delivery_profile",
            translation_key="delivery_profile",
            options=[*PROFILES, CUSTOM],
        )

    @property
    def current_option(self) -> str | None:
        current = {key: self.reported(key) for key in self.settings}
        if None in current.values():
            return None
        return next((name for name, values in PROFILES.items() if values == current), CUSTOM)

    async def async_select_option(self, option: str) -> None:
        if option not in PROFILES:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="custom_profile",
                translation_placeholders={"profiles": ", ".join(PROFILES)},
            )
        await self.async_apply(dict(PROFILES[option]))
