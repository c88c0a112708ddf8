"""Config flow: MQTT discovery, Supervisor discovery, by hand, duplicates, reconfigure, options."""

from __future__ import annotations

from typing import Any

from homeassistant import config_entries
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo

from custom_components.asset_tracker.const import DOMAIN


def discovery(topic: str, payload: str = '{"v": 1}') -> MqttServiceInfo:
    return MqttServiceInfo(
        topic=topic,
        payload=payload,
        qos=1,
        retain=True,
        subscribed_topic="asset_tracker/+/config",
        timestamp=0,
    )


async def test_mqtt_discovery_creates_one_entry_per_fleet(
    hass: HomeAssistant, mqtt_mock: Any
) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": config_entries.SOURCE_MQTT},
        data=discovery("asset_tracker/garage/config"),
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "confirm"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {"root_topic": "asset_tracker"}
    # a second node of the same fleet needs no new flow
    again = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": config_entries.SOURCE_MQTT},
        data=discovery("asset_tracker/kitchen/config"),
    )
    assert again["type"] is FlowResultType.ABORT
    assert again["reason"] == "already_configured"


async def test_mqtt_discovery_rejects_foreign_topics(hass: HomeAssistant, mqtt_mock: Any) -> None:
    for info in (
        discovery("asset_tracker/Bad Node/config"),
        discovery("asset_tracker/garage/config", ""),
    ):
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": config_entries.SOURCE_MQTT}, data=info
        )
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "invalid_discovery_info"


async def test_user_flow_validates_the_topic(hass: HomeAssistant, mqtt_mock: Any) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    assert result["type"] is FlowResultType.FORM
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"root_topic": "bad/#"}
    )
    assert result["errors"] == {"root_topic": "invalid_topic"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"root_topic": "home/tags"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Asset Tracker (home/tags)"
    dup = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_USER}
    )
    dup = await hass.config_entries.flow.async_configure(
        dup["flow_id"], {"root_topic": "home/tags"}
    )
    assert dup["type"] is FlowResultType.ABORT


async def test_hassio_discovery(hass: HomeAssistant, mqtt_mock: Any) -> None:
    info = HassioServiceInfo(
        config={"root_topic": "asset_tracker", "node": "garage"},
        name="Asset Tracker",
        slug="asset_tracker",
        uuid="1",
    )
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_HASSIO}, data=info
    )
    assert result["step_id"] == "confirm"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    bad = HassioServiceInfo(config={"root_topic": "a/+/b"}, name="x", slug="x", uuid="2")
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": config_entries.SOURCE_HASSIO}, data=bad
    )
    assert result["reason"] == "invalid_discovery_info"


async def test_reconfigure_changes_the_base_topic(
    hass: HomeAssistant, mqtt_mock: Any, setup_entry: Any
) -> None:
    result = await setup_entry.start_reconfigure_flow(hass)
    assert result["step_id"] == "reconfigure"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"root_topic": "bad topic"}
    )
    assert result["errors"] == {"root_topic": "invalid_topic"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"root_topic": "fleet2"}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert setup_entry.data == {"root_topic": "fleet2"}
    assert setup_entry.runtime_data.hub.root == "fleet2"


async def test_options_flow_reloads_with_new_tuning(
    hass: HomeAssistant, mqtt_mock: Any, setup_entry: Any
) -> None:
    result = await hass.config_entries.options.async_init(setup_entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    options = {
        "offline_after_s": 600,
        "location_method": "nearest",
        "area_hysteresis_db": 3.0,
        "fusion_window_s": 30,
        "ha_scanners": False,
        "alert_severities": ["critical"],
        "retention_days": 7,
        "max_clock_offset_s": 10,
    }
    result = await hass.config_entries.options.async_configure(result["flow_id"], options)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    hub = setup_entry.runtime_data.hub
    assert hub.options["area_hysteresis_db"] == 3.0
    assert hub.options["location_method"] == "nearest"
    assert hub.options["ha_scanners"] is False
    assert hub.clock.max_offset_ms == 10_000
