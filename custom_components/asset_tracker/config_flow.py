"""Config flow: MQTT discovery of an edge node, Supervisor discovery of the add-on, or by hand."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

import probatio as vol
from homeassistant.config_entries import (
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryFlow,
    OptionsFlowWithReload,
    SubentryFlowResult,
)
from homeassistant.core import callback
from homeassistant.data_entry_flow import section
from homeassistant.helpers import selector, translation
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo

from .assets import (
    CONF_EDDYSTONE_INSTANCE,
    CONF_EDDYSTONE_NAMESPACE,
    CONF_IBEACON_MAJOR,
    CONF_IBEACON_MINOR,
    CONF_IBEACON_UUID,
    CONF_IRK,
    CONF_MAC,
    CONF_NAME,
    CONF_THRESHOLDS,
    CONF_TYPE,
    SUBENTRY_ASSET,
    THRESHOLD_FIELDS,
    FormError,
    adopted_form,
    asset_from_form,
    entry_assets,
    form_from_asset,
    new_asset_id,
)
from .const import (
    CONF_ALERT_SEVERITIES,
    CONF_FUSION_WINDOW,
    CONF_HA_SCANNERS,
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

if TYPE_CHECKING:  # the hub (and MQTT) is loaded with the entry, not with a flow
    from .adoption import Candidate
    from .hub import AssetTrackerConfigEntry

type StepHandler = Callable[[dict[str, Any] | None], Coroutine[Any, Any, SubentryFlowResult]]

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
    def async_get_options_flow(config_entry: AssetTrackerConfigEntry) -> AssetTrackerOptionsFlow:
        """Tuning of presence, fusion and alerts."""
        return AssetTrackerOptionsFlow()

    @classmethod
    @callback
    def async_get_supported_subentry_types(
        cls, config_entry: AssetTrackerConfigEntry
    ) -> dict[str, type[ConfigSubentryFlow]]:
        """Each asset is a subentry of its fleet: added, edited and removed in Home Assistant."""
        return {SUBENTRY_ASSET: AssetSubentryFlow}


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
                vol.Required(CONF_HA_SCANNERS): selector.BooleanSelector(),
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


def _text(
    kind: selector.TextSelectorType = selector.TextSelectorType.TEXT,
) -> selector.TextSelector:
    return selector.TextSelector(selector.TextSelectorConfig(type=kind))


# the menu's step ids of the offered tags: tag_0, tag_1, ... (no address: a MAC has colons)
OFFERED = "tag_"


def _beacon_number() -> selector.NumberSelector:
    return selector.NumberSelector(
        selector.NumberSelectorConfig(min=0, max=65535, mode=selector.NumberSelectorMode.BOX)
    )


def _asset_schema() -> vol.Schema:
    thresholds = {
        vol.Optional(key): selector.NumberSelector(
            selector.NumberSelectorConfig(step="any", mode=selector.NumberSelectorMode.BOX)
        )
        for key in THRESHOLD_FIELDS
    }
    return vol.Schema(
        {
            vol.Required(CONF_NAME): _text(),
            vol.Required(CONF_TYPE, default="tag"): selector.SelectSelector(
                selector.SelectSelectorConfig(
                    options=["tag", "sensor"], translation_key="asset_type"
                )
            ),
            vol.Optional(CONF_MAC): _text(),
            vol.Optional(CONF_IBEACON_UUID): _text(),
            vol.Optional(CONF_IBEACON_MAJOR): _beacon_number(),
            vol.Optional(CONF_IBEACON_MINOR): _beacon_number(),
            vol.Optional(CONF_EDDYSTONE_NAMESPACE): _text(),
            vol.Optional(CONF_EDDYSTONE_INSTANCE): _text(),
            # never shown back: an IRK is a key to a person's phone
            vol.Optional(CONF_IRK): _text(selector.TextSelectorType.PASSWORD),
            vol.Required(CONF_THRESHOLDS): section(vol.Schema(thresholds), {"collapsed": True}),
        }
    )


class AssetSubentryFlow(ConfigSubentryFlow):
    """Add or edit one asset: its name, how nodes recognise it, its type and thresholds."""

    def __init__(self) -> None:
        super().__init__()
        # the tags of the menu last shown, in its order: a click adds the one the user saw there
        self._offered: list[Candidate] = []

    def __getattr__(self, name: str) -> StepHandler:
        """`async_step_tag_<n>`: the step of the n-th tag of the menu last shown."""
        index = name.removeprefix(f"async_step_{OFFERED}")
        offered: list[Candidate] = self.__dict__.get("_offered", [])
        if (
            index != name
            and index.isascii()
            and index.isdigit()
            and str(int(index)) == index
            and int(index) < len(offered)
        ):
            return partial(self._async_adopt, offered[int(index)])
        raise AttributeError(name)

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """A new asset: picked from what the nodes hear, when they report it, else typed."""
        entry = self._get_entry()
        if entry.state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")
        if entry.runtime_data.hub.adoption.candidates(entry_assets(entry)):
            return await self.async_step_pick()
        return await self.async_step_details(user_input)

    async def async_step_pick(self, user_input: dict[str, Any] | None = None) -> SubentryFlowResult:
        """The tags the nodes hear that are no asset yet, strongest first, as a menu: one click
        on a tag adds it; the last option leads to the typed form."""
        entry = self._get_entry()
        hub = entry.runtime_data.hub
        self._offered = hub.adoption.candidates(entry_assets(entry))
        options = {
            f"{OFFERED}{i}": c.label(hub.nodes[c.node].name if c.node in hub.nodes else c.node)
            for i, c in enumerate(self._offered)
        }
        options["details"] = await self._manual_label()
        return self.async_show_menu(step_id="pick", menu_options=options)

    async def _manual_label(self) -> str:
        """The label of the typed form's option, in Home Assistant's language: the frontend
        shows a mapping's labels untranslated."""
        key = (
            f"component.{DOMAIN}.config_subentries.{SUBENTRY_ASSET}.step.pick.menu_options.details"
        )
        strings = await translation.async_get_translations(
            self.hass, self.hass.config.language, "config_subentries", [DOMAIN]
        )
        return strings.get(key) or "Enter manually"

    async def _async_adopt(
        self, tag: Candidate, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """A tag clicked in the menu: added at once, unless it cannot be (then the typed form,
        filled in with what is known of it, says why)."""
        form = adopted_form(tag)
        if tag.rotating:
            # no MAC follows a rotating address: only its IRK, which the user has to type
            return self._details_form(form, {"base": "rotating_address"})
        assets = entry_assets(self._get_entry())
        asset_id = new_asset_id(form[CONF_NAME], {a["id"] for a in assets})
        try:
            asset = asset_from_form(form, asset_id, assets)
        except FormError as err:
            return self._details_form(form, {err.field: err.key})
        return self.async_create_entry(title=asset["name"], data=asset, unique_id=asset_id)

    async def async_step_details(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """The asset's form; on success a subentry, and the list goes to every node."""
        entry = self._get_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            others = entry_assets(entry)
            asset_id = new_asset_id(str(user_input.get(CONF_NAME, "")), {a["id"] for a in others})
            try:
                asset = asset_from_form(user_input, asset_id, others)
            except FormError as err:
                errors[err.field] = err.key
            else:
                return self.async_create_entry(title=asset["name"], data=asset, unique_id=asset_id)
        return self._details_form(user_input or {}, errors)

    def _details_form(self, values: dict[str, Any], errors: dict[str, str]) -> SubentryFlowResult:
        return self.async_show_form(
            step_id="details",
            data_schema=self.add_suggested_values_to_schema(_asset_schema(), values),
            errors=errors,
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Edit an asset; its id stays, so its device and history stay."""
        entry = self._get_entry()
        subentry = self._get_reconfigure_subentry()
        current = dict(subentry.data)
        errors: dict[str, str] = {}
        if user_input is not None:
            form = dict(user_input)
            if not any(
                form.get(k) for k in (CONF_MAC, CONF_IBEACON_UUID, CONF_EDDYSTONE_NAMESPACE)
            ):
                # an empty IRK field keeps the IRK, unless another match replaces it
                form.setdefault(CONF_IRK, current["match"].get("irk"))
                form[CONF_IRK] = form[CONF_IRK] or current["match"].get("irk")
            others = [a for a in entry_assets(entry) if a["id"] != current["id"]]
            try:
                asset = asset_from_form(form, current["id"], others)
            except FormError as err:
                errors[err.field] = err.key
            else:
                return self.async_update_and_abort(entry, subentry, title=asset["name"], data=asset)
        values = form_from_asset(current)
        values.pop(CONF_IRK, None)
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(_asset_schema(), user_input or values),
            errors=errors,
        )
