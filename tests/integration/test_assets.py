"""Assets as config subentries: the add and edit flows, the list sent to the nodes, their answers,
repairs and diagnostics (MQTT mock; the real broker and edge node are in test_assets_live.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock, PropertyMock, patch

import pytest
from homeassistant.config_entries import SOURCE_RECONFIGURE, SOURCE_USER
from homeassistant.const import STATE_UNKNOWN, EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType, InvalidData
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from mqtt_edge import ROOT, Edge
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.asset_tracker.assets import split
from custom_components.asset_tracker.const import DOMAIN
from custom_components.asset_tracker.diagnostics import async_get_config_entry_diagnostics
from custom_components.asset_tracker.sensor import NODE_SENSORS

IRK = "0123456789abcdef0123456789abcdef"
STRINGS = Path(__file__).parents[2] / "custom_components/asset_tracker/strings.json"
UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"


def sent_lists(mqtt: MagicMock, node: str = "garage") -> list[dict[str, Any]]:
    return [
        json.loads(c.args[1])
        for c in mqtt.async_publish.call_args_list
        if c.args[0] == f"{ROOT}/{node}/assets"
    ]


async def add(hass: HomeAssistant, entry: MockConfigEntry, form: dict[str, Any]) -> Any:
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, "asset"), context={"source": SOURCE_USER}
    )
    if result["type"] is FlowResultType.MENU:  # tags are offered: "Enter manually"
        result = await hass.config_entries.subentries.async_configure(
            result["flow_id"], {"next_step_id": "details"}
        )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "details"
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"thresholds": {}, **form}
    )
    await hass.async_block_till_done()
    return result


async def edit(
    hass: HomeAssistant, entry: MockConfigEntry, subentry_id: str, form: dict[str, Any]
) -> Any:
    result = await hass.config_entries.subentries.async_init(
        (entry.entry_id, "asset"),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": subentry_id},
    )
    assert result["step_id"] == "reconfigure"
    # the IRK is never offered back to the browser
    assert IRK not in str([k.description for k in result["data_schema"].schema])
    result = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"thresholds": {}, **form}
    )
    await hass.async_block_till_done()
    return result


@pytest.fixture
def online(hass: HomeAssistant, setup_entry: MockConfigEntry) -> Edge:
    edge = Edge(hass)
    edge.birth()
    return edge


async def test_add_edit_remove_send_a_new_version_to_online_nodes(
    hass: HomeAssistant, mqtt_mock: MagicMock, setup_entry: MockConfigEntry, online: Edge
) -> None:
    await hass.async_block_till_done()
    assert sent_lists(mqtt_mock) == []  # no list yet: the node keeps its YAML assets
    result = await add(
        hass,
        setup_entry,
        {
            "name": "Dog collar",
            "type": "tag",
            "mac": "AA-BB-CC-DD-EE-FF",
            "thresholds": {"temperature_max": 30},
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    (subentry,) = setup_entry.subentries.values()
    assert subentry.unique_id == "dog_collar"
    assert subentry.data["match"] == {"mac": "aa:bb:cc:dd:ee:ff"}
    (first,) = sent_lists(mqtt_mock)
    assert first["version"] == 1 and (first["part"], first["parts"]) == (0, 1)
    assert first["assets"] == [
        {
            "id": "dog_collar",
            "name": "Dog collar",
            "type": "tag",
            "match": {"mac": "aa:bb:cc:dd:ee:ff"},
            "thresholds": {"temperature_max": 30.0},
        }
    ]

    await add(hass, setup_entry, {"name": "Phone", "irk": IRK.upper()})
    assert sent_lists(mqtt_mock)[-1]["version"] == 2
    phone = next(s for s in setup_entry.subentries.values() if s.unique_id == "phone")

    # an edit with the IRK field left empty keeps the IRK; the id (and device) stay
    result = await edit(hass, setup_entry, phone.subentry_id, {"name": "Anna's phone"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    latest = sent_lists(mqtt_mock)[-1]
    assert latest["version"] == 3
    assert {a["id"]: a["name"] for a in latest["assets"]} == {
        "dog_collar": "Dog collar",
        "phone": "Anna's phone",
    }
    assert next(a for a in latest["assets"] if a["id"] == "phone")["match"] == {"irk": IRK}

    # an edit that changes nothing is no new version
    await edit(hass, setup_entry, phone.subentry_id, {"name": "Anna's phone"})
    assert sent_lists(mqtt_mock)[-1]["version"] == 3

    hass.config_entries.async_remove_subentry(setup_entry, phone.subentry_id)
    await hass.async_block_till_done()
    latest = sent_lists(mqtt_mock)[-1]
    assert latest["version"] == 4
    assert [a["id"] for a in latest["assets"]] == ["dog_collar"]


@pytest.mark.parametrize(
    ("form", "field", "error"),
    [
        ({"name": "X"}, "base", "no_match"),
        ({"name": "X", "mac": "aa:bb:cc:dd:ee"}, "mac", "invalid_mac"),
        ({"name": "X", "ibeacon_uuid": "not-a-uuid"}, "ibeacon_uuid", "invalid_ibeacon_uuid"),
        (
            {"name": "X", "ibeacon_uuid": UUID, "ibeacon_major": 1},
            "ibeacon_major",
            "invalid_ibeacon_numbers",
        ),
        (
            {"name": "X", "eddystone_namespace": "00" * 10},
            "eddystone_instance",
            "invalid_eddystone_instance",
        ),
        ({"name": "X", "irk": "abc"}, "irk", "invalid_irk"),
        ({"name": "X", "irk": "zz" * 16}, "irk", "invalid_irk"),
        ({"name": "   ", "mac": "aa:bb:cc:dd:ee:ff"}, "name", "invalid_name"),
        (
            {"name": "X", "mac": "aa:bb:cc:dd:ee:01", "thresholds": {"temperature_max": 500}},
            "thresholds",
            "threshold_range",
        ),
        (
            {
                "name": "X",
                "mac": "aa:bb:cc:dd:ee:01",
                "thresholds": {"humidity_min": 60, "humidity_max": 40},
            },
            "thresholds",
            "threshold_order",
        ),
        ({"name": "Other", "mac": "AA:BB:CC:DD:EE:FF"}, "base", "duplicate_match"),
    ],
)
async def test_bad_input_is_a_translated_error_and_changes_nothing(
    hass: HomeAssistant,
    mqtt_mock: MagicMock,
    setup_entry: MockConfigEntry,
    online: Edge,
    form: dict[str, Any],
    field: str,
    error: str,
) -> None:
    await add(hass, setup_entry, {"name": "Dog collar", "mac": "aa:bb:cc:dd:ee:ff"})
    before = dict(setup_entry.subentries)
    published = len(sent_lists(mqtt_mock))
    result = await add(hass, setup_entry, form)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {field: error}
    strings = json.loads(STRINGS.read_text(encoding="utf-8"))
    assert error in strings["config_subentries"]["asset"]["error"]
    assert dict(setup_entry.subentries) == before
    assert len(sent_lists(mqtt_mock)) == published


async def test_a_node_gets_the_current_list_at_each_birth_until_it_confirms_it(
    hass: HomeAssistant, mqtt_mock: MagicMock, setup_entry: MockConfigEntry
) -> None:
    await add(
        hass,
        setup_entry,
        {"name": "Keys", "ibeacon_uuid": UUID, "ibeacon_major": 1, "ibeacon_minor": 7},
    )
    assert sent_lists(mqtt_mock, "kitchen") == []  # not known yet: nothing to send to
    edge = Edge(hass, "kitchen")
    edge.birth(boot=1)
    await hass.async_block_till_done()
    (sent,) = sent_lists(mqtt_mock, "kitchen")
    assert sent["version"] == 1
    assert sent["assets"][0]["match"] == {"ibeacon": {"uuid": UUID, "major": 1, "minor": 7}}
    # its birth after it subscribed (or after it was away): it may have missed the first one
    edge.birth(boot=1)
    await hass.async_block_till_done()
    assert len(sent_lists(mqtt_mock, "kitchen")) == 2
    # once it confirms the version it applies, a rebirth sends nothing
    edge.send(
        "assets/result",
        {"id": sent["id"], "ok": True, "version": 1, "applied": 1, "hlc": [1, 0]},
    )
    edge.birth(boot=3)
    await hass.async_block_till_done()
    assert len(sent_lists(mqtt_mock, "kitchen")) == 2
    assert setup_entry.runtime_data.hub.nodes["kitchen"].assets_version == 1


async def test_a_rejected_list_raises_a_repair_until_a_list_is_taken(
    hass: HomeAssistant, mqtt_mock: MagicMock, setup_entry: MockConfigEntry, online: Edge
) -> None:
    await add(hass, setup_entry, {"name": "Dog collar", "mac": "aa:bb:cc:dd:ee:ff"})
    online.send(
        "assets/result",
        {
            "id": "abc",
            "ok": False,
            "version": 1,
            "applied": 0,
            "errors": ["assets[0]: something the node refuses"],
            "hlc": [1, 0],
        },
    )
    await hass.async_block_till_done()
    issue = ir.async_get(hass).async_get_issue(DOMAIN, f"{ROOT}_assets_rejected_garage")
    assert issue is not None
    assert issue.translation_placeholders is not None
    assert "something the node refuses" in issue.translation_placeholders["errors"]
    online.send(
        "assets/result", {"id": "abd", "ok": True, "version": 1, "applied": 1, "hlc": [2, 0]}
    )
    await hass.async_block_till_done()
    assert ir.async_get(hass).async_get_issue(DOMAIN, f"{ROOT}_assets_rejected_garage") is None


async def test_a_node_ahead_of_the_list_moves_the_version_above_it(
    hass: HomeAssistant, mqtt_mock: MagicMock, setup_entry: MockConfigEntry, online: Edge
) -> None:
    await add(hass, setup_entry, {"name": "Dog collar", "mac": "aa:bb:cc:dd:ee:ff"})
    # the node applies version 9 from before a restore of Home Assistant's storage
    online.send(
        "assets/result", {"id": "abc", "ok": True, "version": 9, "applied": 9, "hlc": [1, 0]}
    )
    await hass.async_block_till_done()
    latest = sent_lists(mqtt_mock)[-1]
    assert latest["version"] == 10
    assert [a["id"] for a in latest["assets"]] == ["dog_collar"]


async def test_diagnostics_redact_irks_and_macs(
    hass: HomeAssistant, mqtt_mock: MagicMock, setup_entry: MockConfigEntry, online: Edge
) -> None:
    await add(hass, setup_entry, {"name": "Phone", "irk": IRK})
    await add(hass, setup_entry, {"name": "Bike", "mac": "aa:bb:cc:dd:ee:ff"})
    diag = await async_get_config_entry_diagnostics(hass, setup_entry)
    text = json.dumps(diag)
    assert IRK not in text
    assert "aa:bb:cc:dd:ee:ff" not in text
    assert diag["asset_list"]["version"] == 2
    assert {a["id"] for a in diag["asset_list"]["assets"]} == {"phone", "bike"}
    assert len(diag["entry"]["subentries"]) == 2


def test_a_large_list_is_cut_into_parts_under_the_payload_cap() -> None:
    assets = [
        {
            "id": f"asset_{i}",
            "name": "n" * 128,
            "type": "sensor",
            "match": {"mac": f"aa:bb:cc:dd:{i // 256:02x}:{i % 256:02x}", "irk": IRK},
            "thresholds": {"temperature_min": -20.5, "temperature_max": 40.25},
        }
        for i in range(1000)
    ]
    parts = split(assets)
    assert len(parts) > 1
    assert [a for part in parts for a in part] == assets
    for part in parts:
        message = {
            "v": 1,
            "node": "garage",
            "id": "c0ffee01",
            "version": 1,
            "part": 0,
            "parts": len(parts),
            "hlc": [1, 0],
            "assets": part,
        }
        assert len(json.dumps(message, separators=(",", ":"))) < 262_144
    assert split([]) == [[]]


def _heard(edge: Edge, drop: str | None = None) -> None:
    tags = [
        {
            "address": "1e:00:00:00:00:01",
            "address_type": "non_resolvable",
            "format": "ibeacon",
            "rssi": -70,
            "match": {"ibeacon": {"uuid": UUID, "major": 1, "minor": 7}},
        },
        {
            "address": "c4:7c:8d:00:00:03",
            "address_type": "public",
            "format": "xiaomi",
            "name": "LYWSD03MMC",
            "rssi": -55.5,
            "match": {"mac": "c4:7c:8d:00:00:03"},
        },
        {
            "address": "4a:00:00:00:00:04",
            "address_type": "resolvable",
            "format": "other",
            "rssi": -40,
        },
        {
            "address": "aa:bb:cc:dd:ee:ff",
            "address_type": "public",
            "format": "other",
            "rssi": -30,
            "match": {"mac": "aa:bb:cc:dd:ee:ff"},
        },
    ]
    tags = [t for t in tags if t["address"] != drop]
    edge.send("heard", {"hlc": [1, 0], "tags": tags})


async def test_add_asset_offers_what_the_nodes_hear_strongest_first(
    hass: HomeAssistant, mqtt_mock: MagicMock, setup_entry: MockConfigEntry, online: Edge
) -> None:
    await add(hass, setup_entry, {"name": "Dog collar", "mac": "aa:bb:cc:dd:ee:ff"})
    _heard(online)
    # a second node hears the beacon more strongly: it is listed once, with that signal
    kitchen = Edge(hass, "kitchen")
    kitchen.send(
        "heard",
        {
            "hlc": [1, 0],
            "tags": [
                {
                    "address": "1e:00:00:00:00:01",
                    "address_type": "non_resolvable",
                    "format": "ibeacon",
                    "rssi": -50,
                    "match": {"ibeacon": {"uuid": UUID, "major": 1, "minor": 7}},
                }
            ],
        },
    )
    await hass.async_block_till_done()

    async def start() -> Any:
        result = await hass.config_entries.subentries.async_init(
            (setup_entry.entry_id, "asset"), context={"source": SOURCE_USER}
        )
        assert result["type"] is FlowResultType.MENU
        assert result["step_id"] == "pick"
        return result

    def offered(result: Any) -> dict[str, str]:
        """The menu's step id of each offered tag, by address (read from its label)."""
        options: dict[str, str] = result["menu_options"]
        assert all(re.fullmatch(r"[a-z_0-9]+", step) for step in options)  # no colons
        return {
            label.split(" · ")[-2]: step for step, label in options.items() if step != "details"
        }

    result = await start()
    options = result["menu_options"]
    # strongest first; the tag that is already an asset is not offered; the last option types one
    assert list(options) == ["tag_0", "tag_1", "tag_2", "details"]
    assert list(offered(result)) == [
        "4a:00:00:00:00:04",
        "1e:00:00:00:00:01",
        "c4:7c:8d:00:00:03",
    ]
    assert "-50 dBm" in options["tag_1"] and "kitchen" in options["tag_1"]
    assert options["details"] == "Enter manually"

    # a rotating address cannot be followed without an IRK: nothing is added, the typed form
    # says why, filled in with what is known of the tag
    refused = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"next_step_id": "tag_0"}
    )
    assert refused["type"] is FlowResultType.FORM and refused["step_id"] == "details"
    assert refused["errors"] == {"base": "rotating_address"}
    assert len(setup_entry.subentries) == 1

    # one click adds the tag: its name, its match, a sensor for a sensor format; the click adds
    # what the menu showed even when the nodes' list changed since
    result = await start()
    _heard(online, drop="c4:7c:8d:00:00:03")
    await hass.async_block_till_done()
    published = len(sent_lists(mqtt_mock))
    created = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"next_step_id": offered(result)["c4:7c:8d:00:00:03"]}
    )
    await hass.async_block_till_done()
    assert created["type"] is FlowResultType.CREATE_ENTRY
    sub = next(s for s in setup_entry.subentries.values() if s.title == "LYWSD03MMC")
    assert sub.data["match"] == {"mac": "c4:7c:8d:00:00:03"}
    assert sub.data["type"] == "sensor"
    assert len(sent_lists(mqtt_mock)) == published + 1
    assert sent_lists(mqtt_mock)[-1]["version"] == 2

    # the adopted tag is no longer offered; an option not in the menu is refused; "Enter
    # manually" leads to the typed form
    _heard(online)
    await hass.async_block_till_done()
    result = await start()
    assert "c4:7c:8d:00:00:03" not in offered(result)
    with pytest.raises(InvalidData):
        await hass.config_entries.subentries.async_configure(
            result["flow_id"], {"next_step_id": "tag_9"}
        )
    result = await start()
    manual = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"next_step_id": "details"}
    )
    assert manual["step_id"] == "details" and manual["errors"] == {}
    strings = json.loads(STRINGS.read_text(encoding="utf-8"))
    asset = strings["config_subentries"]["asset"]
    assert "rotating_address" in asset["error"]
    assert asset["step"]["pick"]["menu_options"]["details"] == "Enter manually"


async def test_a_tag_added_meanwhile_is_not_added_twice_from_the_menu(
    hass: HomeAssistant, mqtt_mock: MagicMock, setup_entry: MockConfigEntry, online: Edge
) -> None:
    _heard(online)
    await hass.async_block_till_done()
    result = await hass.config_entries.subentries.async_init(
        (setup_entry.entry_id, "asset"), context={"source": SOURCE_USER}
    )
    step = next(s for s, label in result["menu_options"].items() if "aa:bb:cc:dd:ee:ff" in label)
    # the same tag typed in another flow while this menu is open
    await add(hass, setup_entry, {"name": "Dog collar", "mac": "aa:bb:cc:dd:ee:ff"})
    assert len(setup_entry.subentries) == 1
    clicked = await hass.config_entries.subentries.async_configure(
        result["flow_id"], {"next_step_id": step}
    )
    assert clicked["type"] is FlowResultType.FORM and clicked["step_id"] == "details"
    assert clicked["errors"] == {"base": "duplicate_match"}
    assert len(setup_entry.subentries) == 1


async def test_edit_refuses_bad_input_and_names_stay_unique(
    hass: HomeAssistant, mqtt_mock: MagicMock, setup_entry: MockConfigEntry, online: Edge
) -> None:
    namespace, instance = "00112233445566778899", "aabbccddeeff"
    await add(
        hass,
        setup_entry,
        {"name": "Keys", "eddystone_namespace": namespace, "eddystone_instance": instance},
    )
    beacon = {"ibeacon_uuid": UUID, "ibeacon_major": 3, "ibeacon_minor": 4}
    await add(hass, setup_entry, {"name": "Keys", **beacon})
    by_id = {s.unique_id: s for s in setup_entry.subentries.values()}
    assert set(by_id) == {"keys", "keys_2"}  # the same name, two assets
    second = by_id["keys_2"]
    result = await hass.config_entries.subentries.async_init(
        (setup_entry.entry_id, "asset"),
        context={"source": SOURCE_RECONFIGURE, "subentry_id": second.subentry_id},
    )
    # the form shows what is stored
    suggested = {
        str(k): (k.description or {}).get("suggested_value") for k in result["data_schema"].schema
    }
    assert suggested["ibeacon_uuid"] == UUID and suggested["ibeacon_minor"] == 4
    published = len(sent_lists(mqtt_mock))
    refused = await hass.config_entries.subentries.async_configure(
        result["flow_id"],
        {"name": "Keys", "ibeacon_uuid": "nope", "thresholds": {}},
    )
    assert refused["errors"] == {"ibeacon_uuid": "invalid_ibeacon_uuid"}
    # the match of the other asset is refused too
    clash = await hass.config_entries.subentries.async_configure(
        refused["flow_id"],
        {
            "name": "Keys",
            "eddystone_namespace": namespace,
            "eddystone_instance": instance,
            "thresholds": {},
        },
    )
    assert clash["errors"] == {"base": "duplicate_match"}
    await hass.async_block_till_done()
    assert setup_entry.subentries[second.subentry_id].data == second.data
    assert len(sent_lists(mqtt_mock)) == published


async def test_no_asset_flow_while_the_fleet_is_not_loaded(
    hass: HomeAssistant, mqtt_mock: MagicMock, setup_entry: MockConfigEntry
) -> None:
    assert await hass.config_entries.async_unload(setup_entry.entry_id)
    result = await hass.config_entries.subentries.async_init(
        (setup_entry.entry_id, "asset"), context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"


@pytest.fixture
def enabled_by_default() -> Iterator[None]:
    """Every entity enabled, those disabled by default too."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        return_value=True,
        new_callable=PropertyMock,
    ):
        yield


async def test_each_node_shows_the_list_version_it_applies_on_a_diagnostic_sensor(
    hass: HomeAssistant,
    enabled_by_default: None,
    mqtt_mock: MagicMock,
    setup_entry: MockConfigEntry,
    online: Edge,
) -> None:
    (description,) = [d for d in NODE_SENSORS if d.key == "asset_list_version"]
    assert description.entity_registry_enabled_default is False
    assert description.entity_category is EntityCategory.DIAGNOSTIC
    await hass.async_block_till_done()
    registry = er.async_get(hass)
    entity_id = registry.async_get_entity_id(
        "sensor", DOMAIN, f"{ROOT}:node:garage:asset_list_version"
    )
    assert entity_id is not None
    state = hass.states.get(entity_id)
    assert state is not None and state.state == STATE_UNKNOWN  # no answer from the node yet
    await add(hass, setup_entry, {"name": "Dog collar", "mac": "aa:bb:cc:dd:ee:ff"})
    online.send(
        "assets/result", {"id": "abc", "ok": True, "version": 1, "applied": 1, "hlc": [1, 0]}
    )
    await hass.async_block_till_done()
    state = hass.states.get(entity_id)
    assert state is not None and state.state == "1"
    assert state.name.endswith("Asset list version")
