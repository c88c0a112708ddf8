"""Constants of the Asset Tracker integration."""

from __future__ import annotations

from typing import Final

from homeassistant.const import Platform

DOMAIN: Final = "asset_tracker"
DEFAULT_ROOT: Final = "asset_tracker"

CONF_ROOT_TOPIC: Final = "root_topic"
CONF_OFFLINE_AFTER: Final = "offline_after_s"
CONF_HYSTERESIS: Final = "area_hysteresis_db"
CONF_FUSION_WINDOW: Final = "fusion_window_s"
CONF_LOCATION_METHOD: Final = "location_method"
LOCATION_ROOMS: Final = "rooms"
LOCATION_NEAREST: Final = "nearest"
CONF_ALERT_SEVERITIES: Final = "alert_severities"
CONF_RETENTION_DAYS: Final = "retention_days"
CONF_MAX_OFFSET: Final = "max_clock_offset_s"
CONF_HA_SCANNERS: Final = "ha_scanners"

DEFAULT_OPTIONS: Final = {
    CONF_OFFLINE_AFTER: 300,
    CONF_HYSTERESIS: 6.0,
    CONF_FUSION_WINDOW: 40,  # the 30 s heartbeat and one missed: the accuracy harness's best
    CONF_LOCATION_METHOD: LOCATION_ROOMS,
    CONF_ALERT_SEVERITIES: ["warning", "critical"],
    CONF_RETENTION_DAYS: 30,
    CONF_MAX_OFFSET: 60,
    # Home Assistant's own Bluetooth scanners locate assets too: a few microseconds per advert
    # of an asset (bench/ha_scanners.py), nothing for the adverts of anything else
    CONF_HA_SCANNERS: True,
}
SEVERITIES: Final = ("info", "warning", "critical")

PLATFORMS: Final = [
    Platform.BINARY_SENSOR,
    Platform.DEVICE_TRACKER,
    Platform.EVENT,
    Platform.NUMBER,
    Platform.SELECT,
    Platform.SENSOR,
    Platform.SWITCH,
]

EVENT_ANOMALY: Final = f"{DOMAIN}_anomaly"
EVENT_NODE_ALERT: Final = f"{DOMAIN}_node_alert"
EVENT_AREA_CHANGED: Final = f"{DOMAIN}_area_changed"
EVENT_HISTORY: Final = f"{DOMAIN}_late_event"

SIGNAL_NEW_ASSET: Final = f"{DOMAIN}_new_asset_{{}}"
SIGNAL_NEW_NODE: Final = f"{DOMAIN}_new_node_{{}}"
SIGNAL_ASSET_UPDATE: Final = f"{DOMAIN}_asset_{{}}_{{}}"
SIGNAL_NODE_UPDATE: Final = f"{DOMAIN}_node_{{}}_{{}}"
SIGNAL_ANOMALY: Final = f"{DOMAIN}_anomaly_{{}}_{{}}"
SIGNAL_NEW_READING: Final = f"{DOMAIN}_new_reading_{{}}"
# an asset reported its first battery level: its battery sensor is made only then (iBeacon tags and
# the like never report one, and an entity that can only be unknown is noise)
SIGNAL_NEW_BATTERY: Final = f"{DOMAIN}_new_battery_{{}}"

ANOMALY_RULES: Final = [
    "threshold",
    "rate",
    "zscore",
    "missing",
    "battery",
    "movement",
    "data_quality",
    "other",
]
STORAGE_VERSION: Final = 1
# Minor version 2 splits the storage in two. The store under the entry's own key keeps only what
# acks depend on (the dedupe state, the clock, each node's current epoch) and is saved before
# every ack; the asset and node state moved to a store of its own (STATE_STORAGE_SUFFIX), saved
# at most every STATE_SAVE_DELAY_S and at unload. Minor, because an older integration still
# reads the dedupe state (it starts without the asset state, which the nodes bring back).
STORAGE_MINOR_VERSION: Final = 2
STATE_STORAGE_SUFFIX: Final = "state"
# Shown state only (presence, readings, node details): the nodes' next events and snapshots
# bring it up to date after a crash, and nothing is applied twice (the dedupe state's job). At
# 1,000 assets the store is several hundred KB: once per 5 minutes is about 1-3 KB/s of writes.
STATE_SAVE_DELAY_S: Final = 300
# Acks (and the dedupe save before them) at most once a second. Each save writes the dedupe
# store whole, so the interval divides the integration's writes, and the edge's too (it deletes
# what an ack covers in one transaction per ack). The cost is latency the edge does not wait
# on: it re-sends only after 10 s without ack progress (ack_timeout_s), and critical events are
# applied the moment they arrive; an ack only lets the edge delete what it already stored.
ACK_INTERVAL_S: Final = 1.0
# a delayed save of the dedupe state that only Home Assistant's stop (final write) ever carries out
STOP_SAVE_DELAY_S: Final = 3600
MASS_VANISH_COUNT: Final = 3
MASS_VANISH_WINDOW_MS: Final = 30_000
