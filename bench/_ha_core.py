"""Shared by the benchmarks that run a Home Assistant core in a child process of their own
(`ha_ingest.py`, `fleet.py`, `flash_wear.py`): the core started as `hass` starts it, its MQTT
and Asset Tracker entries added through their config flows, and the child's coroutine run on
Home Assistant's own event loop.

Home Assistant is imported inside the functions: the benchmarks' driver processes import this
module too and never load it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant


async def start_core(config_dir: Path) -> HomeAssistant:
    """Bootstrapped from `config_dir` and started, its HTTP settings confirmed."""
    from homeassistant import bootstrap, runner
    from homeassistant.components.http import config as http_config
    from homeassistant.exceptions import HomeAssistantError

    hass = await bootstrap.async_setup_hass(
        runner.RuntimeConfig(config_dir=str(config_dir), skip_pip=True)
    )
    assert hass is not None
    await hass.async_start()
    # the `http:` YAML is a five-minute trial until confirmed, as the user does in the UI
    store = await http_config.async_get_and_load_store(hass)
    with contextlib.suppress(HomeAssistantError):
        await store.async_promote_pending()
    return hass


async def add_mqtt_entry(hass: HomeAssistant, port: int) -> None:
    """The MQTT integration on the broker at 127.0.0.1:`port`, through its config flow."""
    flow: Any = await hass.config_entries.flow.async_init("mqtt", context={"source": "user"})
    other = {"set_client_cert": False, "set_ca_cert": "off", "transport": "tcp"}
    answer = {"broker": "127.0.0.1", "port": port, "other_settings": other}
    flow = await hass.config_entries.flow.async_configure(flow["flow_id"], answer)
    assert flow["type"] == "create_entry", flow


async def add_tracker_entry(hass: HomeAssistant, root_topic: str) -> None:
    """An Asset Tracker entry for `root_topic`, through its config flow."""
    flow: Any = await hass.config_entries.flow.async_init(
        "asset_tracker", context={"source": "user"}
    )
    flow = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {"root_topic": root_topic}
    )
    assert flow["type"] == "create_entry", flow


def run_on_ha_loop(main: Coroutine[Any, Any, object]) -> None:
    """`main` on the event loop Home Assistant creates for itself, as `hass` runs."""
    from homeassistant import runner

    loop = runner.create_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        loop.close()
