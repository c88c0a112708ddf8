"""The whole chain with the real parts: simulated BLE tags on an edge node process, mosquitto, a
real Home Assistant with the integration, a blueprint automation and a headless Chromium.

The tests run in file order on one stack (see conftest.py); each leaves it running for the next.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from outbox_files import read_outbox

from e2e.browser import (
    browser_page,
    calibrate_on_card,
    click_on_plan,
    close_editor,
    on_floor_plan,
    wait_rendered,
)
from e2e.conftest import ALERT_EVENT, NODE_AREA, WORK, Stack
from e2e.hass_process import HassClient, wait_for, websocket
from e2e.plan_image import WALL_COLOUR, plan_png

DOMAIN = "asset_tracker"
ROOT = "asset_tracker"
NODE = "e2e"


async def _registry(client: HassClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    async with websocket(client) as ws:
        entities = await ws.call("config/entity_registry/list")
        devices = await ws.call("config/device_registry/list")
    mine = [e for e in entities if e["platform"] == DOMAIN]
    ours = [d for d in devices if any(i[0] == DOMAIN for i in d["identifiers"])]
    return mine, ours


def _entity(entities: list[dict[str, Any]], unique_id: str) -> str | None:
    return next((e["entity_id"] for e in entities if e["unique_id"] == unique_id), None)


def _asset_ids(devices: list[dict[str, Any]]) -> list[str]:
    prefix = f"{ROOT}:asset:"
    return sorted(
        ident[1][len(prefix) :]
        for d in devices
        for ident in d["identifiers"]
        if ident[0] == DOMAIN and ident[1].startswith(prefix)
    )


async def _diagnostics(client: HassClient, entry_id: str) -> dict[str, Any]:
    return dict((await client.get(f"/api/diagnostics/config_entry/{entry_id}"))["data"])


def _applied_set_size(diag: dict[str, Any]) -> int:
    node = diag["dedupe"].get(NODE, {})
    return sum(int(e["watermark"]) + int(e["pending"]) for e in node.values())


async def test_assets_appear_with_their_areas(stack: Stack) -> None:
    simulated = stack.edge.config["simulator"]
    expected = simulated["tags"] + simulated["sensors"]
    client = stack.client()
    try:

        async def assets_seen() -> Any:
            entities, devices = await _registry(client)
            assets = _asset_ids(devices)
            return (entities, assets) if len(assets) >= expected else None

        entities, assets = await wait_for(
            assets_seen, 60, 0.5, f"{expected} assets\n{stack.logs()}"
        )
        assert len(assets) == expected

        async def areas_shown() -> Any:
            states = await client.states()
            shown = {}
            for asset in assets:
                area = _entity(entities, f"{ROOT}:asset:{asset}:area")
                presence = _entity(entities, f"{ROOT}:asset:{asset}:presence")
                if area and presence and states.get(presence, {}).get("state") == "on":
                    shown[asset] = states[area]["state"]
            return shown if shown else None

        shown = await wait_for(areas_shown, 60, 0.5, "a present asset with an area")
        # one node: every asset it sees present is in that node's area
        assert set(shown.values()) == {NODE_AREA}, shown
        stack.notes["assets"] = assets
        stack.notes["entities"] = entities
    finally:
        await client.close()


async def test_setting_from_an_entity_reaches_the_edge_and_its_anomaly_alerts_within_1s(
    stack: Stack,
) -> None:
    """Raising the low-battery limit from Home Assistant to 100 % makes the edge flag a battery
    as low: the setting reached the edge (its cmd/result and its settings file say so) and the
    anomaly it raises runs through the event entity and the blueprint automation.

    Latency is measured on the records, not on the test's clock: from the HLC the edge stamped
    the anomaly with to the moment Home Assistant fired the automation's event."""
    client = stack.client()
    try:
        entities = (await _registry(client))[0]
        entity_id = _entity(entities, f"{ROOT}:node:{NODE}:setting:rules_battery_min_pct")
        assert entity_id is not None
        await wait_for(
            lambda: _state_is_not(client, entity_id, "unavailable"), 30, 0.5, "settings announced"
        )
        async with websocket(client) as ws:
            anomalies = await ws.subscribe("subscribe_events", event_type="asset_tracker_anomaly")
            alerts = await ws.subscribe("subscribe_events", event_type=ALERT_EVENT)
            # the action returns once the node has answered the versioned command
            await client.post(
                "/api/services/number/set_value", {"entity_id": entity_id, "value": 100}
            )
            state = (await client.states())[entity_id]
            assert float(state["state"]) == 100
            assert "last_error" not in state["attributes"]
            persisted = _edge_settings(stack)
            assert persisted.get("rules.battery.min_pct") == 100, persisted
            anomaly = await _next_anomaly(anomalies, "battery", stack)
            data = anomaly["data"]
            alert = await _alert_for(alerts, data)
        fired_ms = _iso_ms(alert["time_fired"])
        anomaly_ms = _iso_ms(anomaly["time_fired"])
        edge_ms = int(data["hlc"][0])
        latency = {
            "edge_to_bus_event_ms": anomaly_ms - edge_ms,
            "edge_to_automation_ms": fired_ms - edge_ms,
            "bus_event_to_automation_ms": fired_ms - anomaly_ms,
            "rule": data["rule"],
            "severity": data["severity"],
        }
        (WORK / "latency.json").write_text(json.dumps(latency, indent=2))
        assert 0 <= latency["edge_to_automation_ms"] <= 1000, latency

        event_entity = _entity(entities, f"{ROOT}:asset:{data['asset']}:anomaly_event")
        assert event_entity is not None
        event_state = (await client.states())[event_entity]
        assert event_state["attributes"]["event_type"] in (data["rule"], "other")
        assert _iso_ms(event_state["state"]) >= anomaly_ms - 1000
        notifications = await _notifications(client)
        # the blueprint's text starts with a capital and names the asset, rule and node
        texts = [str(n.get("message", "")).lower() for n in notifications]
        assert any(data["message"].lower() in text for text in texts), texts
    finally:
        await client.close()


async def _next_anomaly(queue: asyncio.Queue[Any], rule: str, stack: Stack) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = await asyncio.wait_for(queue.get(), left)
        except TimeoutError:
            break
        if event["data"].get("rule") == rule and not event["data"].get("late"):
            return dict(event)
    raise AssertionError(f"no live {rule} anomaly within 60 s\n{stack.logs()}")


async def _alert_for(queue: asyncio.Queue[Any], data: dict[str, Any]) -> dict[str, Any]:
    while True:
        alert = await asyncio.wait_for(queue.get(), 10)
        same_asset = alert["data"]["asset"] == data["asset"]
        if same_asset and int(alert["data"]["hlc_wall_ms"]) == int(data["hlc"][0]):
            return dict(alert)


async def test_dashboard_renders_the_asset_cards_in_chromium(stack: Stack) -> None:
    assets = stack.notes.get("assets") or []
    assert assets
    async with browser_page(WORK / "browser", stack.tokens) as page:
        await page.send("Page.navigate", url=f"{stack.hass.url}/asset-tracker/fleet")
        tiles = await wait_rendered(page, ("hui-tile-card",), len(assets), timeout=90)
        # the node's area card: the node announced its area, which is a Home Assistant area now
        await _wait_text(page, "hui-entities-card", NODE_AREA)
        shot = WORK / "dashboard.png"
        await page.screenshot(shot)
        assert await page.deep_query("hui-map-card") == []  # BLE tags have no coordinates
        alert_tiles = await _alert_tiles_match_active_anomalies(stack, page)
        await page.send("Page.navigate", url=f"{stack.hass.url}/asset-tracker/edge-health")
        oldest = await _row_text(page, "Oldest unacknowledged")
    assert "Unknown" not in oldest, oldest
    assert len(tiles) == len(assets)
    texts = " | ".join(t["text"] for t in tiles)
    client = stack.client()
    try:
        _, devices = await _registry(client)
        area = await _node_area(client)
    finally:
        await client.close()
    assert area == NODE_AREA
    stack.notes["alert_tiles"] = alert_tiles
    names = [d["name"] for d in devices if d.get("model") != "Edge node"]
    for name in names:
        assert name in texts, (name, texts)
    # stays in build/e2e/: `make screenshots` refreshes docs/dashboard.png on purpose
    assert shot.stat().st_size > 10_000


async def _wait_text(page: Any, tag: str, needle: str, timeout: float = 60) -> str:
    """The text of the first rendered `tag` element that contains `needle`."""

    async def probe() -> str | None:
        found = [f["text"] for f in await page.deep_query(tag) if needle in f["text"]]
        return found[0] if found else None

    return str(await wait_for(probe, timeout, 0.5, f"{needle!r} in a {tag}"))


# An entities card row: its name is in the generic row's shadow root, its state slotted into it.
ROW_QUERY = """
((name) => {
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.localName === 'hui-generic-entity-row' && el.shadowRoot
          && el.shadowRoot.textContent.includes(name)) {
        return (el.shadowRoot.textContent + ' ' + el.textContent).replace(/\\s+/g, ' ').trim();
      }
      const inner = el.shadowRoot ? walk(el.shadowRoot) : null;
      if (inner) return inner;
    }
    return null;
  };
  return walk(document);
})(%s)
"""


async def _row_text(page: Any, name: str) -> str:
    """The name and shown state of the entities-card row called `name`."""

    async def probe() -> str | None:
        text = await page.evaluate(ROW_QUERY % json.dumps(name))
        return str(text) if text and text.strip() != name else None

    return str(await wait_for(probe, 60, 0.5, f"the row {name!r}"))


async def _alert_tiles_match_active_anomalies(stack: Stack, page: Any) -> int:
    """The alerts view shows each active anomaly once: one tile per anomaly sensor that is on
    (read again until the two agree, as anomalies come and go)."""
    await page.send("Page.navigate", url=f"{stack.hass.url}/asset-tracker/alerts")
    await wait_rendered(page, ("hui-heading-card",), 1, timeout=60)
    client = stack.client()
    try:

        async def agree() -> tuple[int] | None:
            states = await client.states()
            on = [
                e
                for e, s in states.items()
                if e.startswith("binary_sensor.") and e.endswith("_anomaly") and s["state"] == "on"
            ]
            rendered = await page.deep_query("hui-tile-card")
            return (len(rendered),) if len(rendered) == len(on) else None

        return (await wait_for(agree, 60, 0.5, "one tile per active anomaly"))[0]
    finally:
        await client.close()


async def _node_area(client: HassClient) -> str | None:
    """The Home Assistant area of the node's device."""
    _, devices = await _registry(client)
    node = next(d for d in devices if d.get("model") == "Edge node")
    async with websocket(client) as ws:
        areas = await ws.call("config/area_registry/list")
    return next((a["name"] for a in areas if a["area_id"] == node["area_id"]), None)


# The floor-plan view: a plan uploaded the way the UI does it (Home Assistant's image upload),
# a floor, two rooms and the node placed by the actions; the card draws them in Chromium.
FLOOR_PLAN_QUERY = on_floor_plan(
    """
  const root = card.shadowRoot;
  const img = root.querySelector('img');
  return {
    image: img ? img.complete && img.naturalWidth > 0 : false,
    rooms: [...root.querySelectorAll('polygon.room')].map((p) => p.dataset.area),
    nodes: [...root.querySelectorAll('rect.node')].map((n) => [n.dataset.node, n.dataset.health]),
    assets: [...root.querySelectorAll('g.asset')].map((g) => ({
      name: g.dataset.asset, where: g.dataset.where, x: g.dataset.x, y: g.dataset.y,
    })),
  };
"""
)


def _plan_png() -> bytes:
    """A 10 x 6 m plan at 100 px a metre (a grid line every half metre): a workshop and a
    hallway."""

    def walls(draw: Any) -> None:
        draw.rectangle([4, 4, 995, 595], outline=WALL_COLOUR, width=8)
        draw.line([(650, 4), (650, 250)], fill=WALL_COLOUR, width=8)
        draw.line([(650, 350), (650, 595)], fill=WALL_COLOUR, width=8)

    return plan_png(1000, 600, walls)


async def _draw_plan(client: HassClient) -> dict[str, Any]:
    """Floor, areas, plan, outlines and the node's position, as a user would set them."""
    async with websocket(client) as ws:
        floor = await ws.call("config/floor_registry/create", name="Ground floor", level=0)
        areas = await ws.call("config/area_registry/list")
        workshop = next(a for a in areas if a["name"] == NODE_AREA)
        await ws.call(
            "config/area_registry/update", area_id=workshop["area_id"], floor_id=floor["floor_id"]
        )
        hallway = await ws.call(
            "config/area_registry/create", name="Hallway", floor_id=floor["floor_id"]
        )
    image = await client.upload_image(_plan_png(), "ground-floor.png")
    service = f"/api/services/{DOMAIN}"
    await client.post(
        f"{service}/set_floor_plan",
        {
            "floor_id": floor["floor_id"],
            "image": {
                "media_content_id": f"media-source://image_upload/{image}",
                "media_content_type": "image/png",
            },
            "width_m": 10,
            "height_m": 6,
        },
    )
    await client.post(
        f"{service}/set_room_outline",
        {"area_id": workshop["area_id"], "outline": [[0, 0], [6.5, 0], [6.5, 6], [0, 6]]},
    )
    await client.post(
        f"{service}/set_room_outline",
        {"area_id": hallway["area_id"], "outline": [[6.5, 0], [10, 0], [10, 6], [6.5, 6]]},
    )
    await client.post(
        f"{service}/set_node_position",
        {"node_id": NODE, "floor_id": floor["floor_id"], "x": 1.0, "y": 1.0},
    )
    return {
        "floor": floor["floor_id"],
        "workshop": workshop["area_id"],
        "hallway": hallway["area_id"],
    }


async def test_floor_plan_view_draws_rooms_nodes_and_assets_live_in_chromium(stack: Stack) -> None:
    client = stack.client()
    try:
        entities, devices = await wait_for(
            lambda: _present_assets(client), 90, 0.5, f"present assets\n{stack.logs()}"
        )
        plan = await _draw_plan(client)
        trackers = {_entity(entities, f"{ROOT}:asset:{a}:tracker"): a for a in _asset_ids(devices)}
        async with browser_page(WORK / "browser", stack.tokens) as page:
            await page.send("Page.navigate", url=f"{stack.hass.url}/asset-tracker/floor-plan")

            seen: list[Any] = []

            async def drawn() -> Any:
                found = await page.evaluate(FLOOR_PLAN_QUERY)
                seen[:] = [found]
                ready = (
                    found and found["image"] and any(a["where"] == "room" for a in found["assets"])
                )
                return found if ready else None

            try:
                found = await wait_for(drawn, 90, 0.5, "the floor plan drawn")
            except TimeoutError as err:
                debug = await page.evaluate(
                    "(() => { const tags = new Set(); const walk = (r) => { for (const el of"
                    " r.querySelectorAll('*')) { if (el.localName.includes('-')) tags.add(el.localName);"
                    " if (el.shadowRoot) walk(el.shadowRoot); } }; walk(document);"
                    " return [location.pathname, !!customElements.get('asset-tracker-floor-plan'),"
                    " [...tags].filter((t) => t.startsWith('hui-')).join(' ')]; })()"
                )
                raise AssertionError((seen, debug, page.console[-20:])) from err
            assert plan["workshop"] in found["rooms"] and len(found["rooms"]) == 2
            assert [health for _name, health in found["nodes"]] == ["online"]
            # one node on the plan gives no position: the assets sit in their room
            in_room = [a for a in found["assets"] if a["where"] == "room"]
            assert in_room and all(0 <= float(a["x"]) <= 6.5 for a in in_room)
            # live: a tracker that gains a position moves without reloading the page
            entity = next(iter(trackers))
            state = (await client.states())[entity]
            moved = {**state["attributes"], "floor": plan["floor"], "x": 8.5, "y": 4.5}
            moved["position_accuracy_m"] = 0.8

            async def followed() -> Any:
                await client.post(f"/api/states/{entity}", {"state": "home", "attributes": moved})
                found = await page.evaluate(FLOOR_PLAN_QUERY)
                asset = next(
                    a for a in found["assets"] if a["name"] in _names(devices, trackers[entity])
                )
                return asset if asset["where"] == "position" else None

            asset = await wait_for(followed, 30, 0.5, "the asset drawn at its position")
            assert (float(asset["x"]), float(asset["y"])) == (8.5, 4.5)
            shot = WORK / "floor-plan.png"
            await page.screenshot(shot)
            await _edit_by_clicking(stack, page, plan)
            await _calibrate_by_clicking(page, _asset_device(devices, trackers[entity]))
            # a tap opens the asset's drill-down
            await page.evaluate(
                on_floor_plan(
                    "const g = [...card.shadowRoot.querySelectorAll('g.asset')]"
                    ".find((g) => g.dataset.where === 'position');"
                    " g.dispatchEvent(new MouseEvent('click', {bubbles: true}));"
                )
            )

            async def opened() -> Any:
                path = await page.evaluate("location.pathname")
                return path if path.startswith("/asset-tracker/asset-") else None

            await wait_for(opened, 30, 0.5, "the asset's drill-down")
        assert shot.stat().st_size > 10_000
    finally:
        await client.close()


CARD = on_floor_plan("return (%s)(card.shadowRoot);")


def _stored_plans(stack: Stack) -> dict[str, Any]:
    path = stack.hass.config_dir / ".storage" / f"{DOMAIN}.{stack.entry_id}.floor_plans"
    return dict(json.loads(path.read_text())["data"])


async def _edit_by_clicking(stack: Stack, page: Any, plan: dict[str, Any]) -> None:
    """The card's editor: the node placed by a click, the hallway outlined by four and saved."""

    async def choose(value: str) -> None:
        await page.evaluate(
            CARD % f"(root) => {{ const s = root.querySelector('select.what'); s.value = "
            f"{json.dumps(value)}; s.dispatchEvent(new Event('change')); }}"
        )

    async def saved(service: str) -> Any:
        return await page.evaluate(
            CARD % f"(root) => root.querySelector('.note').dataset.saved === '{service}'"
        )

    await choose(f"node:{NODE}")
    await click_on_plan(page, 3.0, 2.0)
    await wait_for(lambda: saved("set_node_position"), 30, 0.2, "the node placed")
    node = _stored_plans(stack)["nodes"][NODE]
    assert abs(node["x"] - 3.0) < 0.15 and abs(node["y"] - 2.0) < 0.15, node

    async def redrawn() -> Any:  # the dashboard is generated again with the node moved
        return await page.evaluate(
            CARD % "(root) => { const r = root.querySelector('rect.node');"
            " return Math.abs(+r.getAttribute('x') + +r.getAttribute('width') / 2 - 3) < 0.2; }"
        )

    await wait_for(redrawn, 30, 0.5, "the plan drawn again with the node moved")
    hallway = plan["hallway"]
    await choose(f"room:{hallway}")
    for x, y in ((7.0, 0.5), (9.5, 0.5), (9.5, 5.5), (7.0, 5.5)):
        await click_on_plan(page, x, y)
    await page.evaluate(CARD % "(root) => root.querySelector('button.save').click()")
    await wait_for(lambda: saved("set_room_outline"), 30, 0.2, "the outline saved")
    outline = _stored_plans(stack)["floors"][plan["floor"]]["rooms"][hallway]
    assert len(outline) == 4 and abs(outline[1][0] - 9.5) < 0.15, outline

    async def outlined() -> Any:  # and drawn again, the editor closed
        return await page.evaluate(
            CARD % f"(root) => root.querySelector('polygon.room[data-area=\"{hallway}\"]')"
            ".getAttribute('points').startsWith('7')"
        )

    await wait_for(outlined, 30, 0.5, "the plan drawn again with the new outline")


async def _calibrate_by_clicking(page: Any, device_id: str) -> None:
    """The card's calibration: an asset picked, the spot clicked, the action's answer shown. One
    node on this plan, so the integration refuses it and the card says why, the spot still
    marked."""
    note, corners = await calibrate_on_card(page, device_id, (2.0, 2.0), 30)
    # the action's own translated refusal, as the frontend words a validation error
    assert "Calibration needs a usable floor plan: at least three placed nodes" in note, note
    assert corners == 4  # the spot, drawn as a diamond
    await close_editor(page)


def _asset_device(devices: list[dict[str, Any]], asset: str) -> str:
    ident = f"{ROOT}:asset:{asset}"
    return next(d["id"] for d in devices if any(i[1] == ident for i in d["identifiers"]))


def _names(devices: list[dict[str, Any]], asset: str) -> set[str]:
    ident = f"{ROOT}:asset:{asset}"
    return {
        d.get("name_by_user") or d["name"]
        for d in devices
        if any(i[1] == ident for i in d["identifiers"])
    }


async def _present_assets(client: HassClient) -> Any:
    entities, devices = await _registry(client)
    states = await client.states()
    trackers = [_entity(entities, f"{ROOT}:asset:{a}:tracker") for a in _asset_ids(devices)]
    present = [t for t in trackers if t and states.get(t, {}).get("state") == "home"]
    return (entities, devices) if present else None


async def test_edge_kill9_and_hass_restart_lose_and_duplicate_nothing(stack: Stack) -> None:
    client = stack.client()
    try:
        # phase 1: the edge crashes mid-stream; what reached Home Assistant was applied once
        stack.edge.kill9()
        diag = await _settled_diagnostics(client, stack.entry_id)
        applied_run1 = diag["counters"]["applied"]
        assert applied_run1 == _applied_set_size(diag), diag["counters"]
        assert diag["counters"]["invalid_events"] == 0
        # phase 2: Home Assistant restarts while the edge, back up, keeps producing
        stack.hass.stop()
        persisted = _persisted_applied(stack)
        assert persisted == _applied_set_size(diag)
        stack.edge.start()
        await asyncio.sleep(5)  # the edge works on while nobody acknowledges
        stack.hass.start()
        await stack.hass.wait_ready()
        await client.close()
        client = stack.client()
        await wait_for(lambda: _entry_loaded(client), 60, 0.5, "integration loaded again")
        # a restarted instance is onboarded, as `make demo` finds it on its second run
        assert await client.onboarded()
        # phase 3: the backlog from the outage and the live stream catch up ...
        backlog_end = _edge_high_seq(stack)
        started = time.monotonic()
        await wait_for(
            lambda: _watermark_at_least(client, stack.entry_id, backlog_end),
            150,
            0.5,
            f"watermark {backlog_end} after the restart\n{stack.logs()}",
        )
        stack.notes["backlog_catch_up_s"] = round(time.monotonic() - started, 1)
        # ... then the edge stops cleanly. Every seq it ever numbered is either applied in Home
        # Assistant or still in its outbox (not yet sent), and each applied one was applied once.
        stack.edge.stop()
        final_seq, kept, dropped = _edge_outbox(stack)
        assert dropped == 0
        assert final_seq > applied_run1
        diag = await _settled_diagnostics(client, stack.entry_id)
        applied_run2 = diag["counters"]["applied"]
        await asyncio.sleep(1)  # the dedupe store is saved within 0.25 s of the last event
        in_hass = _persisted_seqs(stack)
        assert len(in_hass) == _applied_set_size(diag)
        missing = set(range(1, final_seq + 1)) - in_hass - kept
        assert not missing, f"lost: {sorted(missing)[:20]}"
        assert applied_run1 + applied_run2 == len(in_hass), (applied_run1, applied_run2)
        stack.notes["duplicates_dropped"] = diag["counters"]["duplicates"]
        (WORK / "exactly_once.json").write_text(
            json.dumps(
                {
                    "events": final_seq,
                    "applied": len(in_hass),
                    "still_in_edge_outbox": len(kept),
                    "applied_before_restart": applied_run1,
                    "applied_after_restart": applied_run2,
                    "duplicates_dropped_after_restart": diag["counters"]["duplicates"],
                    "backlog_catch_up_s": stack.notes["backlog_catch_up_s"],
                },
                indent=2,
            )
        )
    finally:
        await client.close()


# helpers reading what the parts recorded


def _iso_ms(value: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(value).timestamp() * 1000)


async def _notifications(client: HassClient) -> list[dict[str, Any]]:
    async with websocket(client) as ws:
        return list(await ws.call("persistent_notification/get"))


async def _state_is_not(client: HassClient, entity_id: str, value: str) -> bool:
    state = (await client.states()).get(entity_id)
    return state is not None and state["state"] != value


async def _watermark_at_least(client: HassClient, entry_id: str, seq: int) -> bool:
    diag = await _diagnostics(client, entry_id)
    return any(int(e["watermark"]) >= seq for e in diag["dedupe"].get(NODE, {}).values())


async def _entry_loaded(client: HassClient) -> bool:
    try:
        entries = await client.config_entries(DOMAIN)
    except (aiohttp.ClientError, OSError, RuntimeError):
        return False
    return bool(entries) and entries[0]["state"] == "loaded"


async def _settled_diagnostics(client: HassClient, entry_id: str) -> dict[str, Any]:
    """Diagnostics once nothing more arrives (two reads 2 s apart agree)."""
    previous = None
    for _ in range(30):
        diag = await _diagnostics(client, entry_id)
        if previous is not None and previous["counters"] == diag["counters"]:
            return diag
        previous = diag
        await asyncio.sleep(2)
    raise AssertionError("Home Assistant never settled after the edge stopped")


def _persisted_applied(stack: Stack) -> int:
    """The dedupe state Home Assistant saved on shutdown (its .storage file)."""
    path = stack.hass.config_dir / ".storage" / f"{DOMAIN}.{stack.entry_id}"
    data = json.loads(path.read_text())["data"]
    node = data["dedupe"].get(NODE, {})
    return sum(int(e["wm"]) + len(e["above"]) for e in node.values())


def _edge_data(stack: Stack) -> Path:
    return Path(stack.edge.config["storage"]["path"])


def _edge_high_seq(stack: Stack) -> int:
    return read_outbox(_edge_data(stack)).high_seq


def _edge_outbox(stack: Stack) -> tuple[int, set[int], int]:
    """The edge's newest seq, the seqs its outbox still holds, and what it ever dropped."""
    outbox = read_outbox(_edge_data(stack))
    return outbox.high_seq, set(outbox.bodies), outbox.dropped


def _persisted_seqs(stack: Stack) -> set[int]:
    path = stack.hass.config_dir / ".storage" / f"{DOMAIN}.{stack.entry_id}"
    node = json.loads(path.read_text())["data"]["dedupe"].get(NODE, {})
    seqs: set[int] = set()
    for epoch in node.values():
        seqs |= set(range(1, int(epoch["wm"]) + 1)) | {int(s) for s in epoch["above"]}
    return seqs


def _edge_settings(stack: Stack) -> dict[str, Any]:
    raw = json.loads((_edge_data(stack) / "settings.json").read_text())
    return dict(raw.get("values", raw))
