"""Asset Tracker edge node: BLE sensing, local decisions, durable delivery over MQTT."""

__version__ = "0.1.0"
