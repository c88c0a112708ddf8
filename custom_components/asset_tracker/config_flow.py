"""Config flow: MQTT discovery of an edge node, Supervisor discovery of the add-on, or by hand."""

from __future__ import annotations

import re
from typing import Any

import probatio as vol
from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlowWithReload,
)
from homeassistant.core import callback
from homeassistant.helpers import selector
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo

from .const import (
    CONF_ALERT_SEVERITIES,
    CONF_FUSION_WINDOW,
    CONF_HYSTERESIS,
    CONF_LOCATION_METHOD,
    CONF_MAX_OFFSET,
    CONF_OFFLINE_AFTER,
    CONF_RETENTION_DAYS,
    CONF_ROOT_TOPIC,
    DEFAULT_OPTIONS,
    DEFAULT_ROOT,
    DOMAIN,
    LOCATION_NEAREST,
    LOCATION_ROOMS,
    SEVERITIES,
)

ROOT_PATTERN = re.compile(r"[^/+#\x00\s]+(?:/[^/+#\x00\s]+)*")
CONFIG_TOPIC = re.compile(r"(?P<root>.+)/(?P<node>[a-z0-9][a-z0-9_-]{0,31})/config")


def _root_schema(default: str) -> vol.Schema:
    return vol.Schema({vol.Required(CONF_ROOT_TOPIC, default=default): str})


class AssetTrackerConfigFlow(ConfigFlow, domain=DOMAIN):
    """One config entry per fleet (base topic)."""

    VERSION = 1

    def __init__(self) -> None:
        self._root: str | None = None

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Set up by hand with a base topic."""
        errors: dict[str, str] = {}
        if user_input is not None:
            root = user_input[CONF_ROOT_TOPIC].strip()
            if ROOT_PATTERN.fullmatch(root):
                await self.async_set_unique_id(root)
                self._abort_if_unique_id_configured()
                return self._create(root)
            errors[CONF_ROOT_TOPIC] = "invalid_topic"
        return self.async_show_form(
            step_id="user", data_schema=_root_schema(DEFAULT_ROOT), errors=errors
        )

    async def async_step_mqtt(self, discovery_info: MqttServiceInfo) -> ConfigFlowResult:
        """An edge node announced itself on `{root}/{node}/config`."""
        match = CONFIG_TOPIC.fullmatch(discovery_info.topic)
        if match is None or not discovery_info.payload:
            return self.async_abort(reason="invalid_discovery_info")
        return await self._discovered(match["root"])

    async def async_step_hassio(self, discovery_info: HassioServiceInfo) -> ConfigFlowResult:
        """The add-on announced itself through the Supervisor."""
        root = str(discovery_info.config.get(CONF_ROOT_TOPIC, DEFAULT_ROOT))
        if not ROOT_PATTERN.fullmatch(root):
            return self.async_abort(reason="invalid_discovery_info")
        return await self._discovered(root)

    async def _discovered(self, root: str) -> ConfigFlowResult:
        await self.async_set_unique_id(root)
        # a further node of a fleet that is set up already joins it without a new flow
        self._abort_if_unique_id_configured()
        self._root = root
        self.context["title_placeholders"] = {"root": root}
        return await self.async_step_confirm()

    async def async_step_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Confirm a discovered fleet."""
        assert self._root is not None
        if user_input is not None:
            return self._create(self._root)
        self._set_confirm_only()
        return self.async_show_form(
            step_id="confirm", description_placeholders={"root": self._root}
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the base topic of a fleet."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            root = user_input[CONF_ROOT_TOPIC].strip()
            if ROOT_PATTERN.fullmatch(root):
                await self.async_set_unique_id(root)
                self._abort_if_unique_id_configured()
                return self.async_update_reload_and_abort(
                    entry, unique_id=root, title=_title(root), data={CONF_ROOT_TOPIC: root}
                )
            errors[CONF_ROOT_TOPIC] = "invalid_topic"
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=_root_schema(entry.data[CONF_ROOT_TOPIC]),
            errors=errors,
        )

    def _create(self, root: str) -> ConfigFlowResult:
        return self.async_create_entry(title=_title(root), data={CONF_ROOT_TOPIC: root})

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> AssetTrackerOptionsFlow:
        """Tuning of presence, fusion and alerts."""
        return AssetTrackerOptionsFlow()


def _title(root: str) -> str:
    return f"Asset Tracker ({root})"


class AssetTrackerOptionsFlow(OptionsFlowWithReload):
    """Offline repair delay, location method, fusion window, alert severities, retention."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        if user_input is not None:
            return self.async_create_entry(data=user_input)
        current = {**DEFAULT_OPTIONS, **self.config_entry.options}
        schema = vol.Schema(
            {
                vol.Required(CONF_OFFLINE_AFTER): _number(30, 86400, "s"),
                vol.Required(CONF_LOCATION_METHOD): selector.SelectSelector(
                    selector.SelectSelectorConfig(
                        options=[LOCATION_ROOMS, LOCATION_NEAREST],
                        translation_key=CONF_LOCATION_METHOD,
                    )
                ),
                vol.Required(CONF_HYSTERESIS): _number(0, 30, "dB", step=0.5),
                vol.Required(CONF_FUSION_WINDOW): _number(5, 3600, "s"),
                vol.Required(CONF_ALERT_SEVERITIES): selector.SelectSelector(
                    selector.SelectSelectorConfig(
                        options=list(SEVERITIES),
                        multiple=True,
                        translation_key=CONF_ALERT_SEVERITIES,
                    )
                ),
                vol.Required(CONF_RETENTION_DAYS): _number(1, 365, "d"),
                vol.Required(CONF_MAX_OFFSET): _number(1, 3600, "s"),
            }
        )
        return self.async_show_form(
            step_id="init", data_schema=self.add_suggested_values_to_schema(schema, current)
        )


def _number(low: float, high: float, unit: str, step: float = 1) -> selector.NumberSelector:
    return selector.NumberSelector(
        selector.NumberSelectorConfig(
            min=low,
            max=high,
            step=step,
            unit_of_measurement=unit,
            mode=selector.NumberSelectorMode.BOX,
        )
    )
