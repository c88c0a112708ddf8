"""Remote configuration of edge nodes: the runtime settings of PROTOCOL.md as entities.

Changing one sends a versioned `set` command to the node and waits for its `cmd/result`: the
entity always shows the value the node reports as applied (from `config` and `cmd/result`), never
the value asked for, and a rejection is raised to the caller and kept as the entity's `last_error`
attribute until the node accepts a later command.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from homeassistant.components.number import NumberEntityDescription, NumberMode
from homeassistant.components.switch import SwitchEntityDescription
from homeassistant.const import EntityCategory, UnitOfTime
from homeassistant.core import callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.dispatcher import async_dispatcher_connect

from .const import DOMAIN, SIGNAL_NODE_UPDATE
from .entity import NodeEntity
from .hub import AssetTrackerHub

COMMAND_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, kw_only=True)
class NumberSettingDescription(NumberEntityDescription):
    """A numeric runtime setting: its wire key is `setting`, its entity key `key`."""

    setting: str
    integer: bool = True


@dataclass(frozen=True, kw_only=True)
class SwitchSettingDescription(SwitchEntityDescription):
    """A boolean runtime setting."""

    setting: str


# Names come from strings.json and icons from icons.json, both by the entity key: the dotted
# setting with underscores.
def _number(
    setting: str, lo: float, hi: float, *, step: float = 1, unit: str | None = None
) -> NumberSettingDescription:
    key = setting.replace(".", "_")
    return NumberSettingDescription(
        key=key,
        translation_key=key,
        setting=setting,
        native_min_value=lo,
        native_max_value=hi,
        native_step=step,
        native_unit_of_measurement=unit,
        integer=step == 1,
        mode=NumberMode.BOX,
    )


def _switch(rule: str, *, option: str = "enabled") -> SwitchSettingDescription:
    setting = f"rules.{rule}.{option}"
    key = setting.replace(".", "_")
    return SwitchSettingDescription(key=key, translation_key=key, setting=setting)


NUMBERS: Final = (
    _number("presence.away_timeout_s", 5, 86400, unit=UnitOfTime.SECONDS),
    _number("presence.debounce", 1, 20),
    _number("telemetry.interval_s", 1, 3600, unit=UnitOfTime.SECONDS),
    _number("telemetry.delta_db", 0, 30, step=0.5, unit="dB"),
    _number("telemetry.min_interval_s", 0.5, 3600, step=0.5, unit=UnitOfTime.SECONDS),
    _number("batching.window_ms", 10, 60000, unit=UnitOfTime.MILLISECONDS),
    _number("batching.max_events", 1, 500),
    _number("rules.threshold.hold_s", 0, 3600, unit=UnitOfTime.SECONDS),
    _number("rules.threshold.hysteresis", 0, 100, step=0.1),
    _number("rules.rate.max_per_min", 0.1, 100, step=0.1, unit="°C/min"),
    _number("rules.rate.window_s", 120, 3600, unit=UnitOfTime.SECONDS),
    _number("rules.zscore.z", 2, 10, step=0.1),
    _number("rules.missing.after_s", 60, 604800, unit=UnitOfTime.SECONDS),
    _number("rules.battery.min_pct", 1, 100, unit="%"),
    _number("rules.movement.jump_m", 0.5, 100, step=0.1, unit="m"),
)
SWITCHES: Final = (
    _switch("threshold"),
    _switch("rate"),
    _switch("zscore"),
    _switch("missing"),
    _switch("battery"),
    _switch("movement"),
    _switch("movement", option="rssi"),
    # off by default: the node then reports the tags it hears that are no asset, for the
    # "Add asset" form to offer them (PROTOCOL.md "heard")
    SwitchSettingDescription(
        key="unknown_tags_report",
        translation_key="unknown_tags_report",
        setting="unknown_tags.report",
    ),
)


class CommandRejected(HomeAssistantError):
    """The node answered a `set` with errors."""


class RemoteSettingEntity(NodeEntity):
    """Base of the configuration entities on a node's device."""

    _attr_entity_category = EntityCategory.CONFIG
    settings: tuple[str, ...]

    def __init__(self, hub: AssetTrackerHub, node_id: str, key: str) -> None:
        super().__init__(hub, node_id, key)
        self._attr_unique_id = f"{hub.root}:node:{node_id}:setting:{key}"

    @property
    def available(self) -> bool:
        """Online, and only settings the node announced (an older edge may lack a key)."""
        return self.node.online and all(s in self.node.settings for s in self.settings)

    def reported(self, setting: str) -> Any:
        return self.node.settings.get(setting)

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {"settings_version": self.node.settings_version}
        result = self.node.cmd_result
        if result and not result.get("ok", True):
            errors = result.get("errors") or {}
            mine = {k: v for k, v in errors.items() if k in self.settings}
            if mine:
                attrs["last_error"] = "; ".join(f"{k}: {v}" for k, v in mine.items())
        return attrs

    async def async_apply(self, changes: dict[str, Any]) -> None:
        """Sends one all-or-nothing `set` and waits for the node's answer to it."""
        answer: asyncio.Future[dict[str, Any]] = self.hass.loop.create_future()
        command_id: str | None = None

        @callback
        def node_updated() -> None:
            result = self.node.cmd_result
            if command_id and result and result.get("id") == command_id and not answer.done():
                answer.set_result(result)

        signal = SIGNAL_NODE_UPDATE.format(self.hub.entry_id, self.node_id)
        unsubscribe = async_dispatcher_connect(self.hass, signal, node_updated)
        try:
            command_id = await self.hub.async_send_command(self.node_id, "set", changes)
            node_updated()  # a result that arrived while the publish was awaited
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                result = await answer
        except TimeoutError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="command_timeout",
                translation_placeholders={
                    "node": self.node.name,
                    "seconds": f"{COMMAND_TIMEOUT_S:.0f}",
                },
            ) from err
        finally:
            unsubscribe()
        if not result.get("ok", False):
            errors = result.get("errors") or {}
            detail = "; ".join(f"{k}: {v}" for k, v in errors.items()) or "rejected"
            raise CommandRejected(
                translation_domain=DOMAIN,
                translation_key="command_rejected",
                translation_placeholders={"node": self.node.name, "detail": detail},
            )
