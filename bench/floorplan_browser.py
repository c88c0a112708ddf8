"""The floor-plan view in a real browser: 200 assets moving, each updated at least once a second.

A real mosquitto and a real `hass` with the integration (added through its config flow, as in
the end-to-end suite). A publisher in this process plays four edge nodes over MQTT: each announces
itself (status, config with its share of the 200 assets, a suggested area) and then, ten times a
second, sends the telemetry of the tenth of the assets whose turn it is: every asset walks across
a 20 x 12 m floor of four rooms at 1.4 m/s, and each second one of the nodes that hear it, in turn,
reports the RSSI a log-distance model with a wall loss gives at that spot (REPORTERS). The
integration does the rest on its real path (decode, dedupe, ordering, the locator's rooms and the
radio map's positions, the tracker states), so each tracker's x, y, area and accuracy change at
least once a second.

The floor is set up as a user does it: a floor, the nodes' areas on it, a plan image uploaded
with Home Assistant's image upload, the rooms' outlines and the four nodes' positions, by the
integration's actions. Then Debian's chromium opens the generated dashboard's floor-plan view,
logged in, and the page's own performance timeline is read, observed from before the first script
runs:
- `longtask` entries (tasks over 50 ms on the main thread) and `long-animation-frame` entries
  (frames over 50 ms, with the scripts in them);
- frame intervals from a `requestAnimationFrame` loop;
- every WebSocket frame the frontend handles: the time in its message listeners, its size, the
  state changes and tracker changes in it;
- the card's `hass` setter and its deferred draw, wrapped: calls and time in them;
- the time from navigation start until the card draws all 200 assets (a frame after the update
  that completed it);
- the JS heap (DevTools `Runtime.getHeapUsage`), sampled through the window and after a GC;
- the CPU of the `hass` process and of Chromium's processes, and the load average.
The window is MEASURE_S (60 s) of the live view after the first full render; then, as a control,
as long again with the card's updates held back (same page and feed); then, with the feed
stopped, the card alone with 200, 1,000 and 5,000 synthetic assets.

Run: `scripts/py314 python bench/floorplan_browser.py` (part of `make bench`; needs chromium, as
the end-to-end suite). ASSET_TRACKER_BENCH_QUICK=1 measures 20 s and skips the control;
ASSET_TRACKER_BENCH_REPORTERS=all has every node that hears an asset report it each second;
ASSET_TRACKER_BENCH_CARD=<file> serves that card to the browser instead of the integration's (to
compare two versions under the same conditions); ASSET_TRACKER_BENCH_PROFILE=1 writes a CPU
profile of the page's live window (page.cpuprofile and page-profile.txt).
Writes build/bench/parts/floorplan_browser.json and build/bench/floorplan_browser/result.json.
(results in docs/benchmarks.md, "Floor-plan view, 200 assets")
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _part import ROOT, metric, percentile, write_part
from e2e.browser import browser_page, on_floor_plan
from e2e.hass_process import (
    HassClient,
    HassProcess,
    broker_and_hass,
    ensure_integration,
    first_start,
    trackers,
    wait_for,
    websocket,
)
from e2e.plan_image import WALL_COLOUR, plan_png
from mosquitto_broker import Mosquitto

WORK = ROOT / "build" / "bench" / "floorplan_browser"
TOPIC_ROOT = "asset_tracker"
LOGIN = ("Bench", "bench", "bench-password")
QUICK = os.environ.get("ASSET_TRACKER_BENCH_QUICK") == "1"
MEASURE_S = 20.0 if QUICK else 60.0
PROFILE = os.environ.get("ASSET_TRACKER_BENCH_PROFILE") == "1"  # a CPU profile of the window
# another version of the card (a file) served to the browser in place of the integration's, to
# measure a change against what it replaces under the same conditions
CARD = os.environ.get("ASSET_TRACKER_BENCH_CARD")
ASSETS = 200
WIDTH_M, HEIGHT_M = 20.0, 12.0
# four rooms of 10 x 6 m, one node in each (id, area, position)
NODES: list[tuple[str, str, float, float]] = [
    ("bay-a", "Bay A", 3.0, 2.0),
    ("bay-b", "Bay B", 17.0, 2.5),
    ("bay-c", "Bay C", 2.5, 10.0),
    ("bay-d", "Bay D", 16.5, 9.5),
]
TICKS_PER_S = 10
# which of the nodes that hear an asset report it each second: "one" of them in turn (each asset
# reported once a second, so its tracker changes about once a second: the target's rate), or
# "all" (three or four reports a second per asset, as four nodes with a one-second batch window)
REPORTERS = os.environ.get("ASSET_TRACKER_BENCH_REPORTERS", "one")
SPEED_M_S = 1.4  # a walking pace
HEARD_ABOVE_DBM = -92.0
TARGET_BLOCK_MS = 50.0

# Installed before any script of the page runs (DevTools Page.addScriptToEvaluateOnNewDocument).
INSTRUMENT = r"""
(() => {
  if (window.__fp) return;
  const fp = window.__fp = {
    long: [], loaf: [], frames: [], sets: [], draws: [], scale: [], scaleDraws: 0, fed: 0, changes: 0, entityChanges: 0, entities: 0,
    states: null, frozen: false,
    firstSet: null, firstAll: null, total: %d,
  };
  const observe = (type, keep) => {
    try {
      new PerformanceObserver((list) => { for (const e of list.getEntries()) keep(e); })
        .observe({type, buffered: true});
    } catch (err) { fp[type + '_error'] = String(err); }
  };
  observe('longtask', (e) => fp.long.push([e.startTime, e.duration]));
  observe('long-animation-frame', (e) => fp.loaf.push([
    e.startTime, e.duration, e.blockingDuration,
    e.styleAndLayoutStart ? e.startTime + e.duration - e.styleAndLayoutStart : 0,
    (e.scripts || []).map((s) => [s.invoker, Math.round(s.duration), s.sourceURL.split('/').pop()]),
  ]));
  // every WebSocket frame the frontend handles: when, its bytes, the events in it and the time
  // its message listeners took (the frontend's store and everything it calls synchronously)
  fp.ws = [];
  const listen = WebSocket.prototype.addEventListener;
  WebSocket.prototype.addEventListener = function (type, listener, options) {
    if (type !== 'message' || typeof listener !== 'function') {
      return listen.call(this, type, listener, options);
    }
    return listen.call(this, type, function (ev) {
      const t0 = performance.now();
      try { return listener.call(this, ev); } finally {
        const data = typeof ev.data === 'string' ? ev.data : '';
        const count = (needle) => {
          let n = 0;
          for (let i = data.indexOf(needle); i !== -1; i = data.indexOf(needle, i + needle.length)) n += 1;
          return n;
        };
        // a state change names its entity once: the trackers' changes are these
        fp.ws.push([t0, performance.now() - t0, data.length, count('"type":"event"'),
          count('"device_tracker.')]);
      }
    }, options);
  };
  let last = null;
  const frame = (t) => {
    if (last !== null) fp.frames.push([t, t - last]);
    last = t;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  const drawn = (card) => [...card.shadowRoot.querySelectorAll('g.asset')]
    .filter((g) => g.dataset.where === 'room' || g.dataset.where === 'position').length;
  customElements.whenDefined('asset-tracker-floor-plan').then(() => {
    const proto = customElements.get('asset-tracker-floor-plan').prototype;
    const own = Object.getOwnPropertyDescriptor(proto, 'hass');
    const seen = new WeakMap();
    // a card that draws on the next animation frame (_draw): its time counts too
    const draw = proto._draw;
    if (draw) {
      proto._draw = function () {
        const t0 = performance.now();
        draw.call(this);
        if (this.__scale) {
          fp.scale.push(performance.now() - t0);
          fp.scaleDraws += 1;
        }
        else fp.draws.push([t0, performance.now() - t0]);
      };
    }
    // positions from the integration's subscription: the card's work too, held back in the control
    const fed = proto._fed;
    if (fed) {
      proto._fed = function (message) {
        if (fp.frozen && !this.__scale) return;
        const t0 = performance.now();
        fed.call(this, message);
        const t1 = performance.now();
        if (this.__scale) {
          fp.scale.push(t1 - t0);
          return;
        }
        fp.sets.push([t0, t1 - t0]);
        fp.fed += Object.keys(message.positions).length;
      };
    }
    Object.defineProperty(proto, 'hass', {
      configurable: true,
      get: own.get,
      set(hass) {
        const prev = fp.states;
        if (prev) for (const k in hass.states) if (hass.states[k] !== prev[k]) fp.entityChanges += 1;
        fp.states = hass.states;
        if (fp.frozen && !this.__scale) return;
        const t0 = performance.now();
        own.set.call(this, hass);
        const t1 = performance.now();
        if (this.__scale) {
          fp.scale.push(t1 - t0);
          return;
        }
        fp.sets.push([t0, t1 - t0]);
        if (fp.firstSet === null) fp.firstSet = t0;
        let last = seen.get(this);
        if (!last) seen.set(this, (last = new Map()));
        for (const asset of (this._config && this._config.assets) || []) {
          const state = hass.states[asset.entity];
          if (last.get(asset.entity) !== state) {
            if (last.has(asset.entity)) fp.changes += 1;
            last.set(asset.entity, state);
          }
        }
        fp.entities = Object.keys(hass.states).length;
        if (fp.firstAll === null) {
          requestAnimationFrame(() => {
            if (fp.firstAll === null && drawn(this) >= fp.total) fp.firstAll = performance.now();
          });
        }
      },
    });
  });
})();
"""

DRAWN = on_floor_plan(
    """
  const groups = [...card.shadowRoot.querySelectorAll('g.asset')];
  return {
    assets: groups.length,
    room: groups.filter((g) => g.dataset.where === 'room').length,
    position: groups.filter((g) => g.dataset.where === 'position').length,
    nodes: [...card.shadowRoot.querySelectorAll('rect.node')].map((n) => n.dataset.health),
    rooms: card.shadowRoot.querySelectorAll('polygon.room').length,
  };
"""
)


# The card alone at larger fleets, in the same page: a card of N assets on a 100 x 60 m plan fed
# synthetic positions over a stand-in of its subscription (a card without one: tracker attributes),
# a tenth of the assets moving in each update (each asset once in ten), each update drawn before
# the next. Per size: setConfig (building the markers), the first update (all N drawn), and the
# card's script time per update (what it is handed and, when it defers, its draw).
SCALE = r"""
(async (sizes, updates) => {
  const fp = window.__fp;
  const frame = () => new Promise((done) => requestAnimationFrame(() => done()));
  let seed = 7;
  const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const out = [];
  for (const n of sizes) {
    const host = document.createElement('div');
    host.style.cssText = 'position:fixed;left:0;top:0;width:900px;z-index:9999;background:#fff';
    document.body.append(host);
    const assets = [];
    const states = {};
    const positions = {};
    let send = null;
    const connection = {subscribeMessage: (callback) => {
      send = callback;
      return Promise.resolve(() => { send = null; });
    }};
    const place = (i) => [random() * 100, random() * 60, 1.5];
    const tracker = (i, [x, y, r]) => ({
      entity_id: `device_tracker.scale_${i}`, state: 'home',
      attributes: {floor: 'scale', x, y, position_accuracy_m: r},
    });
    for (let i = 0; i < n; i++) {
      const entity = `device_tracker.scale_${i}`;
      assets.push({name: `Scale ${i}`, entity, path: '/asset-tracker/fleet'});
      positions[entity] = place(i);
      states[entity] = tracker(i, positions[entity]);
    }
    const card = document.createElement('asset-tracker-floor-plan');
    card.__scale = n;
    host.append(card);
    let t0 = performance.now();
    card.setConfig({image: 'data:,', width_m: 100, height_m: 60, floor: 'scale', rooms: [],
      nodes: [], assets});
    const build = performance.now() - t0;
    // an update and its draw: a card that defers its draw (_draw) is waited for
    const defers = typeof card._draw === 'function';
    const run = async (update) => {
      const before = fp.scale.length;
      const draws = fp.scaleDraws;
      update();
      await frame();
      for (let k = 0; defers && fp.scaleDraws === draws && k < 120; k++) await frame();
      return fp.scale.slice(before).reduce((a, b) => a + b, 0);
    };
    const hass = {states: {...states}, user: {is_admin: false}, connection};
    const first = await run(() => {
      card.hass = hass;
      if (send) send({positions: {...positions}});
    });
    const times = [];
    for (let u = 0; u < updates; u++) {
      const moved = {};
      for (let i = u % 10; i < n; i += 10) {
        const entity = `device_tracker.scale_${i}`;
        moved[entity] = place(i);
        states[entity] = tracker(i, moved[entity]);
      }
      // the card as served: moves come over its subscription; an older card: new states
      times.push(await run(() => {
        if (send) send({positions: moved});
        else card.hass = {states: {...states}, user: {is_admin: false}, connection};
      }));
      await frame();
    }
    host.remove();
    out.push({n, build, first, times});
  }
  return out;
})(__SIZES__, __UPDATES__)
"""
SCALE_SIZES = (200, 1000, 5000)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def asset_id(index: int) -> str:
    return f"tag-{index:03d}"


def walls_between(ax: float, ay: float, bx: float, by: float) -> int:
    """Walls of the 2 x 2 rooms crossed on the straight line (the rooms meet at x=10, y=6)."""
    half_w, half_h = WIDTH_M / 2, HEIGHT_M / 2
    return int((ax < half_w) != (bx < half_w)) + int((ay < half_h) != (by < half_h))


class Walkers:
    """Where each asset is: a random walk at SPEED_M_S across the floor."""

    def __init__(self, seed: int = 11) -> None:
        self.rng = random.Random(seed)
        self.pos = [
            [self.rng.uniform(1, WIDTH_M - 1), self.rng.uniform(1, HEIGHT_M - 1)]
            for _ in range(ASSETS)
        ]
        self.heading = [self.rng.uniform(0, 2 * math.pi) for _ in range(ASSETS)]

    def step(self, index: int, dt: float) -> tuple[float, float]:
        self.heading[index] += self.rng.gauss(0, 0.6)
        p = self.pos[index]
        for axis, limit in ((0, WIDTH_M), (1, HEIGHT_M)):
            delta = SPEED_M_S * dt * (math.cos if axis == 0 else math.sin)(self.heading[index])
            value = p[axis] + delta
            if not 0.5 <= value <= limit - 0.5:  # bounce off the outer wall
                value = p[axis] - delta
                self.heading[index] = (
                    math.pi - self.heading[index] if axis == 0 else -self.heading[index]
                )
            p[axis] = value
        return p[0], p[1]

    def rssi(self, index: int, node: tuple[str, str, float, float]) -> float:
        x, y = self.pos[index]
        distance = max(0.5, math.hypot(x - node[2], y - node[3], 1.0))
        loss = 22.0 * math.log10(distance) + 5.0 * walls_between(x, y, node[2], node[3])
        return round(-59.0 - loss + self.rng.gauss(0, 2.5), 1)


class Publisher:
    """Four edge nodes on MQTT: announcements, a first presence of every asset, then telemetry."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.epoch = wall_ms()
        self.seq = dict.fromkeys((n[0] for n in NODES), 0)
        self.last_hlc = dict.fromkeys(self.seq, (0, 0))
        self.walkers = Walkers()
        self.sent_events = 0
        self.sent_messages = 0
        self.late_ticks = 0
        self.started = self.stopped = 0.0

    def hlc(self, node: str) -> list[int]:
        now, (wall, counter) = wall_ms(), self.last_hlc[node]
        stamp = (now, 0) if now > wall else (wall, counter + 1)
        self.last_hlc[node] = stamp
        return list(stamp)

    def event(self, node: str, index: int, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        self.seq[node] += 1
        hlc = self.hlc(node)
        prio = "critical" if kind == "presence" else "routine"
        return {
            "seq": self.seq[node],
            "hlc": hlc,
            "obs_ms": hlc[0] - 5,
            "asset": asset_id(index),
            "kind": kind,
            "prio": prio,
            "data": data,
        }

    def message(self, node: str, events: list[dict[str, Any]]) -> bytes:
        body = {
            "v": 1,
            "node": node,
            "epoch": self.epoch,
            "floor": 1,
            "sent": self.hlc(node),
            "events": events,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    async def announce(self, client: Any) -> None:
        for i, (node, area, _x, _y) in enumerate(NODES):
            status = {"v": 1, "node": node, "state": "online", "boot": 1, "epoch": self.epoch}
            status |= {"sw": "bench", "hlc": self.hlc(node)}
            assets = [
                {"id": asset_id(a), "name": f"Tag {a:03d}", "type": "tag"}
                for a in range(ASSETS)
                if a % len(NODES) == i
            ]
            config = {"v": 1, "node": node, "name": f"Node {area}", "area": area, "sw": "bench"}
            config["assets"] = assets
            await client.publish(f"{TOPIC_ROOT}/{node}/status", json.dumps(status), 1, True)
            await client.publish(f"{TOPIC_ROOT}/{node}/config", json.dumps(config), 1, True)

    def telemetry(self, node: tuple[str, str, float, float], index: int, rssi: float) -> Any:
        distance = round(10 ** ((-59.0 - rssi) / 22.0), 2)
        return self.event(node[0], index, "telemetry", {"rssi": rssi, "distance_m": distance})

    async def present(self, client: Any) -> None:
        """Every asset present, said by the node that hears it best, as an edge node does."""
        by_node: dict[str, list[dict[str, Any]]] = {n[0]: [] for n in NODES}
        for index in range(ASSETS):
            best = max(NODES, key=lambda n: self.walkers.rssi(index, n))
            data = {"state": "present", "rssi": self.walkers.rssi(index, best)}
            by_node[best[0]].append(self.event(best[0], index, "presence", data))
        for node, events in by_node.items():
            await client.publish(f"{TOPIC_ROOT}/{node}/events", self.message(node, events), 1)

    async def run(self, client: Any, stop: asyncio.Event) -> None:
        """Ten ticks a second; each moves a tenth of the assets one second on, and the nodes that
        hear one of them report it in that tick's batch: in turn, one a second (REPORTERS "one":
        about one tracker update per asset per second), or every one of them ("all")."""
        started = self.started = time.monotonic()
        tick = 0
        while not stop.is_set():
            due = started + tick / TICKS_PER_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.5 / TICKS_PER_S:
                self.late_ticks += 1
            mine = range(tick % TICKS_PER_S, ASSETS, TICKS_PER_S)
            for index in mine:
                self.walkers.step(index, 1.0)
            batches: dict[str, list[dict[str, Any]]] = {n[0]: [] for n in NODES}
            for index in mine:
                heard = [
                    (n, r) for n in NODES if (r := self.walkers.rssi(index, n)) >= HEARD_ABOVE_DBM
                ]
                if REPORTERS == "one" and heard:
                    heard = [heard[(tick // TICKS_PER_S) % len(heard)]]
                for node, rssi in heard:
                    batches[node[0]].append(self.telemetry(node, index, rssi))
            for node in NODES:
                events = batches[node[0]]
                if events:
                    await client.publish(
                        f"{TOPIC_ROOT}/{node[0]}/events", self.message(node[0], events), 1
                    )
                    self.sent_events += len(events)
                    self.sent_messages += 1
            tick += 1
        self.stopped = time.monotonic()


def floor_png() -> bytes:
    """A 20 x 12 m plan at 50 px a metre (a grid line a metre): four rooms with doors."""
    scale = 50
    width, height = int(WIDTH_M * scale), int(HEIGHT_M * scale)

    def walls(draw: Any) -> None:
        draw.rectangle([3, 3, width - 4, height - 4], outline=WALL_COLOUR, width=6)
        mid_x, mid_y = width // 2, height // 2
        for line in (
            [(mid_x, 0), (mid_x, mid_y - 60)],
            [(mid_x, mid_y + 60), (mid_x, height)],
            [(0, mid_y), (mid_x - 200, mid_y)],
            [(mid_x + 200, mid_y), (width, mid_y)],
        ):
            draw.line(line, fill=WALL_COLOUR, width=6)

    return plan_png(width, height, walls, grid=scale)


async def draw_plan(client: HassClient) -> str:
    """Floor, the nodes' areas on it, plan image, outlines and node positions, by the actions."""
    async with websocket(client) as ws:
        floor = await ws.call("config/floor_registry/create", name="Bench floor", level=0)

        async def areas() -> Any:
            found = {a["name"]: a for a in await ws.call("config/area_registry/list")}
            return found if all(n[1] in found for n in NODES) else None

        by_name = await wait_for(areas, 60, 0.5, "the nodes' areas")
        for _node, area, _x, _y in NODES:
            await ws.call(
                "config/area_registry/update",
                area_id=by_name[area]["area_id"],
                floor_id=floor["floor_id"],
            )
    image = await client.upload_image(floor_png(), "bench-floor.png")
    service = "/api/services/asset_tracker"
    await client.post(
        f"{service}/set_floor_plan",
        {
            "floor_id": floor["floor_id"],
            "image": {
                "media_content_id": f"media-source://image_upload/{image}",
                "media_content_type": "image/png",
            },
            "width_m": WIDTH_M,
            "height_m": HEIGHT_M,
        },
    )
    half_w, half_h = WIDTH_M / 2, HEIGHT_M / 2
    corners = [(0.0, 0.0), (half_w, 0.0), (0.0, half_h), (half_w, half_h)]
    for (_node, area, _x, _y), (left, top) in zip(NODES, corners, strict=True):
        outline = [[left, top], [left + half_w, top], [left + half_w, top + half_h]]
        outline.append([left, top + half_h])
        await client.post(
            f"{service}/set_room_outline",
            {"area_id": by_name[area]["area_id"], "outline": outline},
        )
    for node, _area, x, y in NODES:
        await client.post(
            f"{service}/set_node_position",
            {"node_id": node, "floor_id": floor["floor_id"], "x": x, "y": y},
        )
    return str(floor["floor_id"])


def profile_summary(profile: dict[str, Any], top: int = 40) -> str:
    """Self time of a DevTools CPU profile by script and by function, largest first."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    self_us: dict[int, float] = {}
    deltas = profile.get("timeDeltas", [])
    for sample, delta in zip(profile.get("samples", []), [*deltas[1:], 0], strict=True):
        self_us[sample] = self_us.get(sample, 0.0) + delta
    by_script: dict[str, float] = {}
    by_function: dict[str, float] = {}
    for ident, us in self_us.items():
        frame = nodes[ident]["callFrame"]
        script = frame["url"].split("/")[-1] or "(native)"
        by_script[script] = by_script.get(script, 0.0) + us
        name = f"{frame['functionName'] or '(anonymous)'} {script}:{frame['lineNumber']}"
        by_function[name] = by_function.get(name, 0.0) + us
    total = sum(self_us.values()) or 1.0
    lines = [f"{total / 1e6:.1f} s sampled"]
    for title, table in (("by script", by_script), ("by function", by_function)):
        lines.append(f"-- self time {title}")
        for name, us in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"{us / 1e3:9.0f} ms {100 * us / total:5.1f}%  {name}")
    return "\n".join(lines) + "\n"


def loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return [math.nan] * 3


async def measure(hass: HassProcess, broker: Mosquitto) -> dict[str, Any]:
    import aiomqtt

    setup_started = time.monotonic()
    await hass.wait_ready()
    client, tokens = await first_start(hass, LOGIN, (broker.host, broker.port))
    await ensure_integration(client)
    publisher = Publisher(broker.port)
    stop = asyncio.Event()
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-fleet") as mqtt:
        await publisher.announce(mqtt)

        async def all_trackers() -> Any:
            found = await trackers(client)
            return found if len(found) >= ASSETS else None

        entities = await wait_for(all_trackers, 180, 1.0, f"{ASSETS} trackers")
        floor = await draw_plan(client)
        await publisher.present(mqtt)
        feeding = asyncio.create_task(publisher.run(mqtt, stop))

        async def placed() -> Any:
            states = await client.states()
            shown = [
                e
                for e in entities
                if states.get(e, {}).get("state") == "home"
                and states[e]["attributes"].get("floor") == floor
                and (
                    states[e]["attributes"].get("x") is not None
                    or states[e]["attributes"].get("area_id")
                )
            ]
            return len(shown) if len(shown) >= ASSETS else None

        try:
            await wait_for(placed, 180, 1.0, f"{ASSETS} trackers home on the floor")
            states = await client.states()
            positioned = sum(1 for e in entities if states[e]["attributes"].get("x") is not None)
            setup_s = time.monotonic() - setup_started
            result = await browse(hass, tokens, stop)
        finally:
            stop.set()
            await feeding
        await client.close()
    result["setup_s"] = round(setup_s, 1)
    result["positioned_at_start"] = positioned
    feed_s = publisher.stopped - publisher.started
    result["feed_s"] = round(feed_s, 1)
    result["published_events_per_s"] = round(publisher.sent_events / max(1.0, feed_s), 1)
    result["loadavg_end"] = loadavg()
    result["publisher_late_ticks"] = publisher.late_ticks
    return result


async def browse(hass: HassProcess, tokens: Any, stop_feed: asyncio.Event) -> dict[str, Any]:
    """Opens the view, waits for the first full render, then measures two windows: the card live,
    and the same page with the card's updates held back (what the frontend costs without it)."""
    async with browser_page(WORK / "browser", tokens, 1280, 1000) as page:
        await page.send("Page.addScriptToEvaluateOnNewDocument", source=INSTRUMENT % ASSETS)
        if CARD:
            await serve_card(page, Path(CARD).read_bytes())
        await page.send("Page.navigate", url=f"{hass.url}/asset-tracker/floor-plan")

        async def complete() -> Any:
            return await page.evaluate("window.__fp && window.__fp.firstAll")

        try:
            await wait_for(complete, 120, 0.5, f"the card drawing {ASSETS} assets")
        except TimeoutError as err:
            drawn = await page.evaluate(DRAWN)
            raise RuntimeError(f"{err}: {drawn}; console {page.console[-20:]}") from err
        first = await page.evaluate(
            "({firstAll: __fp.firstAll, firstSet: __fp.firstSet, long: __fp.long})"
        )
        result: dict[str, Any] = {
            "first_render_ms": round(first["firstAll"], 1),
            "first_hass_set_ms": round(first["firstSet"], 1),
            "long_tasks_loading": len(first["long"]),
            "longest_task_loading_ms": max((r[1] for r in first["long"]), default=0.0),
            "drawn_at_start": await page.evaluate(DRAWN),
        }
        result["live"] = await window(page, hass, frozen=False)
        result["drawn_at_end"] = await page.evaluate(DRAWN)
        await page.screenshot(WORK / "floor-plan-200.png")
        if not QUICK:
            result["frozen"] = await window(page, hass, frozen=True)
        stop_feed.set()  # the card alone: no state stream competing with it
        await asyncio.sleep(3)
        result["scale"] = []
        for size in SCALE_SIZES:
            script = SCALE.replace("__SIZES__", json.dumps([size])).replace("__UPDATES__", "40")
            row = (await page.evaluate(script))[0]
            result["scale"].append(
                {
                    "assets": row["n"],
                    "build_ms": row["build"],
                    "first_draw_ms": row["first"],
                    "update_p50_ms": percentile(row["times"], 50),
                    "update_p95_ms": percentile(row["times"], 95),
                    "update_max_ms": max(row["times"]),
                }
            )
        await page.send("HeapProfiler.collectGarbage")
        result["heap_mib_after_gc"] = (await page.send("Runtime.getHeapUsage"))["usedSize"] / 2**20
    result["reporters"] = REPORTERS
    result["card"] = CARD or "the integration's"
    return result


async def serve_card(page: Any, body: bytes) -> None:
    """The browser gets `body` whenever it asks for the card's module (DevTools Fetch)."""
    note = page._note
    encoded = base64.b64encode(body).decode()

    def intercept(data: dict[str, Any]) -> None:
        if data.get("method") == "Fetch.requestPaused":
            headers = [{"name": "Content-Type", "value": "text/javascript"}]
            asyncio.get_running_loop().create_task(
                page.send(
                    "Fetch.fulfillRequest",
                    requestId=data["params"]["requestId"],
                    responseCode=200,
                    responseHeaders=headers,
                    body=encoded,
                )
            )
        note(data)

    page._note = intercept
    await page.send("Fetch.enable", patterns=[{"urlPattern": "*/floor-plan-card.js*"}])


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def chromium_pids() -> list[int]:
    marker = str(WORK / "browser").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def window(page: Any, hass: HassProcess, *, frozen: bool) -> dict[str, Any]:
    """MEASURE_S of the live page; `frozen`: the card's hass updates are not passed on."""
    await page.evaluate(f"__fp.frozen = {json.dumps(frozen)}")
    profiling = PROFILE and not frozen
    if profiling:
        await page.send("Profiler.enable")
        await page.send("Profiler.setSamplingInterval", interval=500)
        await page.send("Profiler.start")
    procs = {"hass": [hass.proc.pid] if hass.proc else [], "chromium": chromium_pids()}
    cpu_start = {k: cpu_seconds(v) for k, v in procs.items()}
    start = await page.evaluate(
        "(__fp.changes0 = __fp.changes, __fp.entityChanges0 = __fp.entityChanges,"
        " __fp.fed0 = __fp.fed, performance.now())"
    )
    t_start = time.monotonic()
    load_start = loadavg()
    heap: list[float] = []
    t_end = t_start + MEASURE_S
    while time.monotonic() < t_end:
        usage = await page.send("Runtime.getHeapUsage")
        heap.append(float(usage["usedSize"]))
        await asyncio.sleep(min(5.0, max(0.0, t_end - time.monotonic())))
    end = await page.evaluate("performance.now()")
    elapsed = time.monotonic() - t_start
    cpu = {k: round(100 * (cpu_seconds(v) - cpu_start[k]) / elapsed, 1) for k, v in procs.items()}
    load_end = loadavg()
    if profiling:
        profile = (await page.send("Profiler.stop"))["profile"]
        (WORK / "page.cpuprofile").write_text(json.dumps(profile))
        (WORK / "page-profile.txt").write_text(profile_summary(profile))
    data = await page.evaluate(
        "({long: __fp.long, loaf: __fp.loaf, frames: __fp.frames, sets: __fp.sets, draws: __fp.draws,"
        " ws: __fp.ws,"
        " changes: __fp.changes - __fp.changes0, fed: __fp.fed - __fp.fed0,"
        " entityChanges: __fp.entityChanges - __fp.entityChanges0, entities: __fp.entities,"
        " errors: Object.keys(__fp).filter((k) => k.endsWith('_error')).map((k) => __fp[k])})"
    )
    seconds = (end - start) / 1000
    in_window = lambda rows: [r for r in rows if start <= r[0] <= end]  # noqa: E731
    long = in_window(data["long"])
    loaf = in_window(data["loaf"])
    frames = [r[1] for r in in_window(data["frames"])]
    sets = [r[1] for r in in_window(data["sets"])]
    # the card's own work per update: in its hass setter, or in the frame's draw it defers to
    draws = [r[1] for r in in_window(data["draws"])]
    ws = in_window(data["ws"])
    slow = [r for r in ws if r[1] > TARGET_BLOCK_MS]
    return {
        "seconds": round(seconds, 1),
        "ws_frames_per_s": len(ws) / seconds,
        "ws_events_per_s": sum(r[3] for r in ws) / seconds,
        "ws_tracker_changes_per_s": sum(r[4] for r in ws) / seconds,
        "ws_kib_per_s": sum(r[2] for r in ws) / seconds / 1024,
        "ws_handler_p95_ms": percentile([r[1] for r in ws], 95),
        "ws_handler_max_ms": max((r[1] for r in ws), default=0.0),
        "ws_handler_share_pct": sum(r[1] for r in ws) / (end - start) * 100,
        # the frames whose handling took over 50 ms: how many events they carried
        "ws_slow_frames": len(slow),
        "ws_slow_events_median": percentile([r[3] for r in slow], 50),
        "ws_fast_events_median": percentile([r[3] for r in ws if r[1] <= TARGET_BLOCK_MS], 50),
        "ws_slowest": sorted(ws, key=lambda r: -r[1])[:5],
        "long_tasks": long,
        "long_tasks_count": len(long),
        "longest_task_ms": max((r[1] for r in long), default=0.0),
        "long_task_ms_total": sum(r[1] for r in long),
        "loaf_count": len(loaf),
        "loaf_longest_ms": max((r[1] for r in loaf), default=0.0),
        "loaf_blocking_max_ms": max((r[2] for r in loaf), default=0.0),
        # the rendering steps of those frames: style, layout (and paint setup) after the scripts
        "loaf_render_max_ms": max((r[3] for r in loaf), default=0.0),
        "loaf_render_ms_total": sum(r[3] for r in loaf),
        "loaf_script_ms_total": sum(sum(x[1] for x in r[4]) for r in loaf),
        "loaf_worst": sorted(loaf, key=lambda r: -r[1])[:5],
        "frames": len(frames),
        "frame_p50_ms": percentile(frames, 50),
        "frame_p95_ms": percentile(frames, 95),
        "frame_p99_ms": percentile(frames, 99),
        "frame_max_ms": max(frames, default=math.nan),
        "hass_sets": len(sets),
        "hass_sets_per_s": len(sets) / seconds,
        "draws": len(draws),
        "hass_set_p95_ms": percentile(sets, 95),
        "card_work_p95_ms": percentile(draws or sets, 95),
        "card_work_max_ms": max(draws or sets, default=math.nan),
        "card_share_pct": (sum(sets) + sum(draws)) / (end - start) * 100,
        "tracker_changes_per_s": data["changes"] / seconds,
        "fed_positions_per_s": data["fed"] / seconds,
        "entity_changes_per_s": data["entityChanges"] / seconds,
        "entities_in_hass": data["entities"],
        "heap_mib_max": max(heap) / 2**20,
        "heap_mib_start": heap[0] / 2**20,
        "cpu_pct": cpu,
        "observer_errors": data["errors"],
        "loadavg_start": load_start,
        "loadavg_end": load_end,
    }


def rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    live, frozen = r["live"], r.get("frozen")
    load = (
        f"load average {live['loadavg_start'][0]:.2f} at the start, "
        f"{live['loadavg_end'][0]:.2f} at the end; CPU hass {live['cpu_pct']['hass']:.0f}%, "
        f"chromium {live['cpu_pct']['chromium']:.0f}% (2 cores = 200%)"
    )
    control = ""
    if frozen:
        control = (
            f"; the same page with the card's updates held back: longest "
            f"{frozen['longest_task_ms']:.0f} ms, {frozen['long_tasks_count']} long tasks, "
            f"frame p95 {frozen['frame_p95_ms']:.0f} ms"
        )
    out = [
        metric(
            "longest_main_thread_block_ms",
            live["longest_task_ms"],
            "ms",
            target=f"<= {TARGET_BLOCK_MS:.0f}",
            note=f"longest `longtask` entry in {live['seconds']:.0f} s of the live view "
            f"(0: no task over 50 ms){control}; {load}",
        ),
        metric(
            "long_tasks_over_50ms",
            live["long_tasks_count"],
            "tasks",
            target="== 0",
            note=f"`longtask` entries in the window, {live['long_task_ms_total'] / 1000:.1f} s "
            f"in all ({r['long_tasks_loading']} while the frontend loaded, longest "
            f"{r['longest_task_loading_ms']:.0f} ms)",
        ),
        metric(
            "long_animation_frames",
            live["loaf_count"],
            "frames",
            note=f"`long-animation-frame` entries (frames over 50 ms) in the window; longest "
            f"{live['loaf_longest_ms']:.0f} ms, largest blocking "
            f"{live['loaf_blocking_max_ms']:.0f} ms; in them {live['loaf_script_ms_total'] / 1000:.1f} s "
            f"of scripts, {live['loaf_render_ms_total'] / 1000:.2f} s of style and layout "
            f"(longest {live['loaf_render_max_ms']:.0f} ms)",
        ),
        metric(
            "frame_interval_p95_ms",
            live["frame_p95_ms"],
            "ms",
            note=f"requestAnimationFrame intervals, {live['frames']} frames; p50 "
            f"{live['frame_p50_ms']:.1f}, p99 {live['frame_p99_ms']:.1f}, "
            f"max {live['frame_max_ms']:.1f} ms",
        ),
        metric(
            "first_render_200_assets_ms",
            r["first_render_ms"],
            "ms",
            note="navigation start -> the frame after the card's first hass update with all "
            f"{ASSETS} assets drawn (first hass update at {r['first_hass_set_ms']:.0f} ms)",
        ),
        metric(
            "asset_updates_per_s",
            live["fed_positions_per_s"] + live["tracker_changes_per_s"],
            "updates/s",
            target=f">= {ASSETS * 0.9:.0f}",
            note=f"what the card was given: {live['fed_positions_per_s']:.0f} positions/s over "
            "its asset_tracker/positions subscription and "
            f"{live['tracker_changes_per_s']:.0f} tracker changes/s (several changes of one "
            f"tracker between two of its updates count once); {ASSETS} assets, "
            f"each reported by {'one node' if r['reporters'] == 'one' else 'every node that hears it'} "
            f"a second ({r['published_events_per_s']:.0f} reports/s over MQTT); the frontend got "
            f"{live['ws_events_per_s']:.0f} state changes/s for its {live['entities_in_hass']} "
            "entities",
        ),
        metric(
            "card_update_p95_ms",
            live["card_work_p95_ms"],
            "ms",
            note=f"the card's own work per update ({'its once-a-frame draw' if live['draws'] else 'its hass setter'}), "
            f"max {live['card_work_max_ms']:.1f} ms; {live['card_share_pct']:.2f}% of the main "
            f"thread; hass handed to it {live['hass_sets_per_s']:.1f} times/s",
        ),
        metric(
            "js_heap_used_mib",
            live["heap_mib_max"],
            "MiB",
            note=f"largest sample in the window (start {live['heap_mib_start']:.1f}, "
            f"{r['heap_mib_after_gc']:.1f} after a GC at the end)",
        ),
    ]
    out.append(
        metric(
            "frontend_state_stream_max_ms",
            live["ws_handler_max_ms"],
            "ms",
            note="the frontend's handling of one WebSocket frame (its entity store and what that "
            f"calls at once): {live['ws_frames_per_s']:.0f} frames/s carrying "
            f"{live['ws_events_per_s']:.0f} events/s, {live['ws_handler_share_pct']:.0f}% of the "
            f"main thread, p95 {live['ws_handler_p95_ms']:.1f} ms; the {live['ws_slow_frames']} "
            f"frames over 50 ms carried a median of {live['ws_slow_events_median']:.0f} events, "
            f"the others {live['ws_fast_events_median']:.0f}",
        )
    )
    for row in r["scale"]:
        out.append(
            metric(
                f"card_alone_{row['assets']}_update_p95_ms",
                row["update_p95_ms"],
                "ms",
                note=f"the card alone with {row['assets']} synthetic assets, a tenth moving per "
                f"update: p50 {row['update_p50_ms']:.2f}, max {row['update_max_ms']:.2f} ms; "
                f"markers built in {row['build_ms']:.1f} ms, first draw of all "
                f"{row['first_draw_ms']:.1f} ms",
            )
        )
    if frozen:
        out.append(
            metric(
                "frontend_alone_longest_block_ms",
                frozen["longest_task_ms"],
                "ms",
                note=f"control: the next {frozen['seconds']:.0f} s, same page and feed, the "
                f"card's hass updates held back; {frozen['long_tasks_count']} long tasks, frame "
                f"p95 {frozen['frame_p95_ms']:.0f} ms",
            )
        )
    return out


async def main() -> None:
    with broker_and_hass(WORK, tail_on_error=60) as (broker, hass):
        result = await measure(hass, broker)
    (WORK / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    path = write_part(
        "floorplan_browser",
        f"Floor-plan view in Chromium: {ASSETS} assets, each updated about once a second",
        rows(result),
    )
    print(path.read_text())


if __name__ == "__main__":
    asyncio.run(main())
