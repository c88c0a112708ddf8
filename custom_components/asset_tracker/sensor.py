"""Sensors: per asset area, distance, signal, battery, readings, last seen, dwell and visits;
per node outbox, latency, clock and rates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import (
    LIGHT_LUX,
    PERCENTAGE,
    SIGNAL_STRENGTH_DECIBELS_MILLIWATT,
    EntityCategory,
    UnitOfDensity,
    UnitOfElectricPotential,
    UnitOfLength,
    UnitOfPressure,
    UnitOfRatio,
    UnitOfTemperature,
    UnitOfTime,
)
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType
from homeassistant.util import dt as dt_util

from .analytics import significant
from .clock import wall_ms
from .const import SIGNAL_NEW_BATTERY, SIGNAL_NEW_READING
from .entity import AssetEntity, NodeEntity, async_track_devices
from .hub import AssetTrackerConfigEntry, AssetTrackerHub
from .models import AssetState, NodeState

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class AssetSensorDescription(SensorEntityDescription):
    """An asset sensor and how to read it."""

    value_fn: Callable[[AssetTrackerHub, AssetState], StateType | datetime]
    ticks: bool = False  # changes with time alone: refreshed on the hub's housekeeping tick
    # made only once the asset has reported what it shows (else added on its first value)
    exists_fn: Callable[[AssetState], bool] = lambda _asset: True


@dataclass(frozen=True, kw_only=True)
class NodeSensorDescription(SensorEntityDescription):
    """A node health sensor and how to read it."""

    value_fn: Callable[[NodeState], StateType]


def _last_seen(_hub: AssetTrackerHub, asset: AssetState) -> datetime | None:
    seen = asset.last_seen_ms
    return dt_util.utc_from_timestamp(seen / 1000) if seen else None


def _oldest_age_s(node: NodeState) -> float | None:
    """Age of the oldest unacknowledged event when the node reported it, on the node's own clock
    (its health's `hlc`), so the figure changes with each report, not with each message; 0 for
    an empty outbox (nothing waits), unknown only while the node has not reported its outbox."""
    oldest = node.outbox.get("oldest_ms")
    if oldest is None:
        return 0 if node.outbox.get("depth") == 0 else None
    reported = node.health.get("hlc")
    at = int(reported[0]) if reported else wall_ms()
    return round(max(0, at - int(oldest)) / 1000, 1)


ASSET_SENSORS: tuple[AssetSensorDescription, ...] = (
    AssetSensorDescription(
        key="area",
        translation_key="area",
        value_fn=lambda hub, a: a.area if a.presence != "away" else None,
    ),
    AssetSensorDescription(
        key="distance",
        translation_key="distance",
        entity_registry_enabled_default=False,
        device_class=SensorDeviceClass.DISTANCE,
        native_unit_of_measurement=UnitOfLength.METERS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        value_fn=lambda _hub, a: a.distance_m,
    ),
    AssetSensorDescription(
        key="rssi",
        translation_key="rssi",
        device_class=SensorDeviceClass.SIGNAL_STRENGTH,
        native_unit_of_measurement=SIGNAL_STRENGTH_DECIBELS_MILLIWATT,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda _hub, a: a.rssi,
    ),
    AssetSensorDescription(
        key="battery",
        device_class=SensorDeviceClass.BATTERY,
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda _hub, a: a.battery,
        exists_fn=lambda a: a.battery is not None,
    ),
    AssetSensorDescription(
        key="last_seen",
        translation_key="last_seen",
        entity_registry_enabled_default=False,
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=_last_seen,
    ),
    AssetSensorDescription(
        key="dwell",
        translation_key="dwell",
        entity_registry_enabled_default=False,
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.MINUTES,
        ticks=True,
        value_fn=lambda _hub, a: a.visits.dwell_minutes(wall_ms()),
    ),
    AssetSensorDescription(
        key="visits",
        translation_key="visits",
        entity_registry_enabled_default=False,
        state_class=SensorStateClass.TOTAL,
        value_fn=lambda _hub, a: sum(a.visits.per_area.values()),
    ),
)

BATTERY_SENSOR = next(d for d in ASSET_SENSORS if d.key == "battery")

NODE_SENSORS: tuple[NodeSensorDescription, ...] = (
    NodeSensorDescription(
        key="outbox_depth",
        translation_key="outbox_depth",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda n: n.outbox.get("depth"),
    ),
    NodeSensorDescription(
        key="oldest_unacked",
        translation_key="oldest_unacked",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.SECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=_oldest_age_s,
    ),
    NodeSensorDescription(
        key="dropped_events",
        translation_key="dropped_events",
        state_class=SensorStateClass.TOTAL_INCREASING,
        value_fn=lambda n: n.dropped_total() if n.health else None,
    ),
    NodeSensorDescription(
        key="replay_rate",
        translation_key="replay_rate",
        native_unit_of_measurement="events/s",
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda n: n.outbox.get("replay_rate"),
    ),
    NodeSensorDescription(
        key="latency_p95",
        translation_key="latency_p95",
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.MILLISECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda n: significant(n.latency.p95()),
    ),
    NodeSensorDescription(
        key="clock_offset",
        translation_key="clock_offset",
        native_unit_of_measurement=UnitOfTime.MILLISECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda n: n.clock_offset_ms,
    ),
    NodeSensorDescription(
        key="asset_list_version",
        translation_key="asset_list_version",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        # unknown until the node has answered a list (0: it applies none, its YAML assets alone)
        value_fn=lambda n: n.assets_version if n.assets_result is not None else None,
    ),
    NodeSensorDescription(
        key="events_per_minute",
        translation_key="events_per_minute",
        native_unit_of_measurement="events/min",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda n: significant(n.events.per_minute(wall_ms())),
    ),
    NodeSensorDescription(
        key="anomaly_rate",
        translation_key="anomaly_rate",
        native_unit_of_measurement="anomalies/h",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda n: n.anomalies.count(wall_ms()),
    ),
)

# metric -> (device class, unit) for the readings of sensor tags (PROTOCOL.md)
READINGS: dict[str, tuple[SensorDeviceClass | None, str | None]] = {
    "temperature": (SensorDeviceClass.TEMPERATURE, UnitOfTemperature.CELSIUS),
    "humidity": (SensorDeviceClass.HUMIDITY, PERCENTAGE),
    "pressure": (SensorDeviceClass.ATMOSPHERIC_PRESSURE, UnitOfPressure.HPA),
    "battery_voltage": (SensorDeviceClass.VOLTAGE, UnitOfElectricPotential.VOLT),
    "acceleration": (None, "m/s²"),
    "moisture": (SensorDeviceClass.MOISTURE, PERCENTAGE),
    "illuminance": (SensorDeviceClass.ILLUMINANCE, LIGHT_LUX),
    "co2": (SensorDeviceClass.CO2, UnitOfRatio.PARTS_PER_MILLION),
    "pm25": (SensorDeviceClass.PM25, UnitOfDensity.MICROGRAMS_PER_CUBIC_METER),
}


async def async_setup_entry(
    hass: HomeAssistant,
    entry: AssetTrackerConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up asset and node sensors, and reading sensors as metrics appear."""
    hub = entry.runtime_data.hub

    def asset_entities(asset_id: str) -> list[SensorEntity]:
        asset = hub.assets[asset_id]
        fixed: list[SensorEntity] = [
            AssetSensor(hub, asset_id, d) for d in ASSET_SENSORS if d.exists_fn(asset)
        ]
        return fixed + [ReadingSensor(hub, asset_id, metric) for metric in asset.readings]

    for unsubscribe in async_track_devices(
        hub,
        async_add_entities,
        asset_entities=asset_entities,
        node_entities=lambda n: [NodeSensor(hub, n, d) for d in NODE_SENSORS],
    ):
        entry.async_on_unload(unsubscribe)
    entry.async_on_unload(
        async_dispatcher_connect(
            hass,
            SIGNAL_NEW_READING.format(hub.entry_id),
            callback(
                lambda asset_id, metric: async_add_entities([ReadingSensor(hub, asset_id, metric)])
            ),
        )
    )
    entry.async_on_unload(
        async_dispatcher_connect(
            hass,
            SIGNAL_NEW_BATTERY.format(hub.entry_id),
            callback(
                lambda asset_id: async_add_entities([AssetSensor(hub, asset_id, BATTERY_SENSOR)])
            ),
        )
    )


class AssetSensor(AssetEntity, SensorEntity):
    """A sensor of an asset described by `AssetSensorDescription`."""

    entity_description: AssetSensorDescription

    def __init__(
        self, hub: AssetTrackerHub, asset_id: str, description: AssetSensorDescription
    ) -> None:
        super().__init__(hub, asset_id, description.key)
        self.entity_description = description
        if description.translation_key is None:
            self._attr_translation_key = None

    async def async_added_to_hass(self) -> None:
        await super().async_added_to_hass()
        if self.entity_description.ticks:
            tickers, tick = self.hub.tickers, self.async_write_ha_state
            tickers.add(tick)
            self.async_on_remove(lambda: tickers.discard(tick))

    def state_inputs(self) -> Any:
        return (self.native_value, self.extra_state_attributes)

    @property
    def native_value(self) -> StateType | datetime:
        return self.entity_description.value_fn(self.hub, self.asset)

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        if self.entity_description.key == "visits":
            return {"per_area": dict(self.asset.visits.per_area)}
        return None


class ReadingSensor(AssetEntity, SensorEntity):
    """One metric of a sensor tag (temperature, humidity, ...)."""

    _attr_state_class = SensorStateClass.MEASUREMENT

    def __init__(self, hub: AssetTrackerHub, asset_id: str, metric: str) -> None:
        super().__init__(hub, asset_id, f"reading_{metric}")
        self.metric = metric
        device_class, unit = READINGS.get(metric, (None, None))
        self._attr_device_class = device_class
        self._attr_native_unit_of_measurement = unit
        # named by Home Assistant after the device class when there is one; otherwise by a
        # translation of its own, or for a metric only a newer node knows, "Reading {metric}"
        if device_class is not None:
            self._attr_translation_key = None
        elif metric in READINGS:
            self._attr_translation_key = f"reading_{metric}"
        else:
            self._attr_translation_key = "reading"
            self._attr_translation_placeholders = {"metric": metric}

    def state_inputs(self) -> Any:
        return self.native_value

    @property
    def native_value(self) -> float | None:
        return self.asset.readings.get(self.metric)


class NodeSensor(NodeEntity, SensorEntity):
    """A health figure of an edge node."""

    entity_description: NodeSensorDescription

    def __init__(
        self, hub: AssetTrackerHub, node_id: str, description: NodeSensorDescription
    ) -> None:
        super().__init__(hub, node_id, description.key)
        self.entity_description = description

    def state_inputs(self) -> Any:
        return (self.native_value, self.extra_state_attributes)

    @property
    def native_value(self) -> StateType:
        return self.entity_description.value_fn(self.node)

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        if self.entity_description.key == "latency_p95":
            split = self.node.latency.split_p95().items()
            return {f"{part}_p95_ms": significant(v) for part, v in split}
        return None
