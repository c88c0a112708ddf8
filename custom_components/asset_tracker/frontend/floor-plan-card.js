// Asset Tracker floor plan: one floor's image with its rooms, the nodes (online or offline) and
// the assets where they are, live. The dashboard generates the card's configuration (metres from
// the image's top-left corner); this only draws it and moves the assets.
// Positions come from the integration's own subscription (`asset_tracker/positions`, one floor):
// the floor's positions at once, then what moved, at most four times a second. The trackers show a
// move only every few seconds (fewer state writes for the recorder and every open frontend); a
// tracker the subscription never named is drawn from its attributes x, y, position_accuracy_m.
// An asset with a position is drawn there with its uncertainty as a circle; one without is drawn
// near its room's centre and the room, its uncertainty, is highlighted. A tap opens the asset's
// drill-down view.
// Administrators edit the plan on the card: pick a node and click where it stands, a room and
// click its corners, or an asset to calibrate with and click the spot where it is held (the
// integration fits the nodes' offsets there and the card shows the error before and after).
// Updates stay cheap at a few hundred assets changing every second: the card only notes a new
// `hass` or moved positions and redraws at most every DRAW_EVERY_MS, in an animation frame, the
// trackers whose state object or position changed, moving each marker by one transform and
// writing only the attributes whose value changed. The markers are an SVG layer of their own above
// the rooms and nodes, so a redraw repaints only them (docs/benchmarks.md, "Floor-plan view, 200
// assets").
const SVG = "http://www.w3.org/2000/svg";
const DRAW_EVERY_MS = 250;
const CALIBRATE_S = 60; // how long the asset is held at the spot

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

// an edit under way (the mode picked, the corners clicked) and what the last save said, per plan:
// every save generates the dashboard again, and the new config builds the card again (or replaces
// it with a new element), which must not lose them
const EDITS = new Map();
const CARDS = new Set(); // the cards on the page, so a save that ends after a rebuild still shows

const SAVED = () => "Saved.";

// what a calibration's response says, in a line
function fitted(r) {
  if (!r) return "Calibrated.";
  const nodes = Object.keys(r.offsets_db || {}).length;
  const what = r.applied ? "offsets applied" : "offsets not applied (the fit did not help)";
  return (
    `Error at the spot: ${r.error_before_m} m before, ${r.error_after_m} m after; ` +
    `${what} (${nodes} nodes, ${r.samples} samples).`
  );
}

class AssetTrackerFloorPlan extends HTMLElement {
  setConfig(config) {
    if (!config || !config.image || !(config.width_m > 0) || !(config.height_m > 0)) {
      throw new Error("image, width_m and height_m are required");
    }
    const floor = this._config && this._config.floor;
    this._config = config;
    if (!this._positions || floor !== config.floor) {
      // another floor: its positions come with a new subscription
      this._unsubscribe();
      this._positions = new Map(); // tracker entity -> [x, y, accuracy] or null, as subscribed
    }
    this._moved = new Set(); // tracker entities whose position changed since the last draw
    this._drawn = new Map(); // tracker entity -> {group, state, ...what is drawn}
    this._nodes = new Map(); // connectivity entity -> {mark, state}
    this._build();
  }

  getCardSize() {
    return 8;
  }

  _build() {
    const c = this._config;
    const root = this.shadowRoot || this.attachShadow({ mode: "open" });
    root.innerHTML = `
      <style>
        ha-card { overflow: hidden; }
        .plan { position: relative; width: 100%; aspect-ratio: ${c.width_m} / ${c.height_m}; }
        .plan img, .plan svg { position: absolute; inset: 0; width: 100%; height: 100%; }
        .plan img { object-fit: fill; }
        .plan svg.moving { will-change: transform; pointer-events: none; }
        .plan svg.moving .asset { pointer-events: auto; }
        .room { fill: rgba(3, 169, 244, 0.08); stroke: var(--primary-color, #03a9f4); }
        .room-name { fill: var(--secondary-text-color, #555); font-family: sans-serif; }
        .node.online { fill: var(--success-color, #43a047); }
        .node.offline { fill: var(--error-color, #db4437); }
        .node.unknown { fill: var(--disabled-color, #9e9e9e); }
        .asset { cursor: pointer; }
        .asset .dot { fill: var(--accent-color, #ff9800); stroke: white; }
        .asset .spread { fill: rgba(255, 152, 0, 0.15); stroke: rgba(255, 152, 0, 0.6); }
        .room.holds { fill: rgba(255, 152, 0, 0.12); stroke-dasharray: 0.3 0.15; }
        .asset text { font-family: sans-serif; fill: var(--primary-text-color, #212121); }
        .asset.hidden { display: none; }
        .draft { fill: rgba(3, 169, 244, 0.15); stroke: var(--primary-color, #03a9f4); }
        .edit { display: flex; gap: 8px; align-items: center; padding: 8px 16px; flex-wrap: wrap; }
        .edit[hidden] { display: none; }
        .plan.editing svg { cursor: crosshair; }
      </style>
      <ha-card>
        <div class="plan"><img alt=""></div>
        <div class="edit" hidden>
          <select class="what"><option value="">Edit the plan…</option></select>
          <button class="save" hidden>Save outline</button>
          <button class="undo" hidden>Undo point</button>
          <span class="note"></span>
        </div>
      </ha-card>`;
    root.querySelector("ha-card").header = c.title || "";
    const plan = root.querySelector(".plan");
    plan.querySelector("img").src = c.image;
    const box = { viewBox: `0 0 ${c.width_m} ${c.height_m}`, preserveAspectRatio: "none" };
    const layer = svg("svg", box); // the rooms and nodes
    const moving = svg("svg", { ...box, class: "moving" }); // the assets, redrawn often
    const unit = Math.max(c.width_m, c.height_m) / 60; // marks scale with the plan
    this._unit = unit;
    this._rooms = new Map();
    this._polygons = new Map();
    for (const room of c.rooms || []) {
      const points = room.outline.map((p) => p.join(",")).join(" ");
      const poly = svg("polygon", { points, class: "room", "stroke-width": unit / 6 });
      poly.dataset.area = room.area_id;
      layer.append(poly);
      this._polygons.set(room.area_id, poly);
      const top = Math.min(...room.outline.map((p) => p[1]));
      const label = svg("text", {
        x: room.centre[0],
        y: top + unit * 2,
        "font-size": unit * 1.4,
        "text-anchor": "middle",
        class: "room-name",
      });
      label.textContent = room.name;
      layer.append(label);
      this._rooms.set(room.area_id, room);
    }
    for (const node of c.nodes || []) {
      const mark = svg("rect", {
        x: node.x - unit / 2,
        y: node.y - unit / 2,
        width: unit,
        height: unit,
        class: "node unknown",
      });
      mark.dataset.node = node.name;
      const title = svg("title", {});
      title.textContent = node.name;
      mark.append(title);
      layer.append(mark);
      if (node.entity) this._nodes.set(node.entity, { mark, state: undefined });
    }
    this._assetLayer = svg("g", {});
    moving.append(this._assetLayer);
    for (const asset of c.assets || []) this._drawAsset(asset);
    this._draft = svg("polygon", { class: "draft", points: "", "stroke-width": unit / 6 });
    layer.append(this._draft);
    plan.append(layer, moving);
    this._layer = layer;
    this._buildEditor(root, plan);
    if (this._hass) this._draw();
    this._subscribe();
  }

  connectedCallback() {
    CARDS.add(this);
    this._subscribe();
  }

  disconnectedCallback() {
    CARDS.delete(this);
    this._unsubscribe();
  }

  _subscribe() {
    if (this._subscription || !this._hass || !this._config || !this.isConnected) return;
    const request = { type: "asset_tracker/positions", floor: this._config.floor };
    const subscription = this._hass.connection.subscribeMessage((m) => this._fed(m), request);
    this._subscription = subscription;
    subscription.catch((err) => {
      if (this._subscription === subscription) this._subscription = undefined;
      console.warn("asset-tracker-floor-plan: no live positions", err);
    });
  }

  _unsubscribe() {
    const subscription = this._subscription;
    this._subscription = undefined;
    if (subscription) subscription.then((unsubscribe) => unsubscribe()).catch(() => {});
  }

  _fed(message) {
    for (const [entity, position] of Object.entries(message.positions)) {
      this._positions.set(entity, position);
      this._moved.add(entity);
    }
    this._schedule();
  }

  // editing (administrators): pick a node and click where it stands, or a room and click its
  // corners, then save; the integration's actions validate and store it, and the dashboard
  // is generated again with it
  _buildEditor(root, plan) {
    const c = this._config;
    const select = root.querySelector(".what");
    const groups = [
      ["Place a node", "node", c.placeable || []],
      ["Outline a room", "room", c.areas || []],
      ["Calibrate with", "calibrate", (c.assets || []).filter((a) => a.device_id)],
    ];
    for (const [label, kind, items] of groups) {
      if (!items.length) continue;
      const group = document.createElement("optgroup");
      group.label = label;
      for (const item of items) {
        const option = document.createElement("option");
        const key = { node: item.node_id, room: item.area_id, calibrate: item.device_id }[kind];
        option.value = `${kind}:${key}`;
        option.textContent = item.name;
        group.append(option);
      }
      select.append(group);
    }
    this._editor = root.querySelector(".edit");
    this._key = `${c.entry_id || ""}/${c.floor || ""}`;
    const kept = EDITS.get(this._key);
    this._note = root.querySelector(".note");
    this._mode = "";
    this._points = [];
    select.addEventListener("change", () => {
      this._mode = select.value;
      this._points = [];
      this._drawDraft();
      const outlining = this._mode.startsWith("room:");
      root.querySelector(".save").hidden = !outlining;
      root.querySelector(".undo").hidden = !outlining;
      plan.classList.toggle("editing", this._mode !== "");
      this._note.textContent = !this._mode
        ? ""
        : outlining
          ? "Click the room's corners in order, then save."
          : this._mode.startsWith("calibrate:")
            ? `Hold ${select.selectedOptions[0].textContent} still at about 1 m, ` +
              `click where it is, and keep it there for ${CALIBRATE_S} s.`
            : "Click where the node stands.";
      this._remember();
    });
    root.querySelector(".undo").addEventListener("click", () => {
      this._points.pop();
      this._drawDraft();
      this._remember();
    });
    root.querySelector(".save").addEventListener("click", () => {
      this._call("set_room_outline", {
        area_id: this._mode.slice(5),
        outline: this._points,
      });
    });
    plan.addEventListener("click", (ev) => this._clicked(ev)); // on the plan or an asset
    if (!kept) return;
    if (kept.mode && [...select.options].some((o) => o.value === kept.mode)) {
      select.value = kept.mode;
      select.dispatchEvent(new Event("change"));
      this._points = [...kept.points];
      this._drawDraft();
    }
    this._note.textContent = kept.note;
    this._note.dataset.saved = kept.saved;
    this._remember();
  }

  _remember(mode = this._mode) {
    EDITS.set(this._key, {
      mode,
      points: mode ? [...this._points] : [],
      note: this._note.textContent,
      saved: this._note.dataset.saved || "",
    });
  }

  _metres(ev) {
    const box = this._layer.getBoundingClientRect();
    const round = (v) => Math.round(v * 20) / 20; // 5 cm
    return [
      round(((ev.clientX - box.left) / box.width) * this._config.width_m),
      round(((ev.clientY - box.top) / box.height) * this._config.height_m),
    ];
  }

  _clicked(ev) {
    if (!this._mode || this._busy) return;
    const [x, y] = this._metres(ev);
    if (this._mode.startsWith("calibrate:")) {
      this._points = [[x, y]];
      this._drawDraft();
      this._note.textContent = `Calibrating: keep it still for ${CALIBRATE_S} s…`;
      const asset = this._mode.slice(10);
      const data = { device_id: asset, floor_id: this._config.floor, x, y, duration: CALIBRATE_S };
      this._call("calibrate", data, { fleet: false, told: fitted });
    } else if (this._mode.startsWith("node:")) {
      this._call("set_node_position", {
        node_id: this._mode.slice(5),
        floor_id: this._config.floor,
        x,
        y,
      });
    } else {
      this._points.push([x, y]);
      this._drawDraft();
      this._note.textContent = `${this._points.length} corners`;
      this._remember();
    }
  }

  _drawDraft() {
    // one point (a calibration spot) is drawn as a small diamond round it
    const u = this._unit / 2;
    const points =
      this._points.length === 1 && this._mode.startsWith("calibrate:")
        ? [[0, -u], [u, 0], [0, u], [-u, 0]].map(([dx, dy]) => [
            this._points[0][0] + dx,
            this._points[0][1] + dy,
          ])
        : this._points;
    this._draft.setAttribute("points", points.map((p) => p.join(",")).join(" "));
  }

  // `fleet`: the action takes the entry (a calibration finds it from the asset); `told`: what
  // the note says of the action's response (asked for only then)
  async _call(service, data, { fleet = true, told = SAVED } = {}) {
    const entry = fleet && this._config.entry_id ? { config_entry_id: this._config.entry_id } : {};
    this._busy = true;
    try {
      const result = await this._hass.callService(
        "asset_tracker",
        service,
        { ...data, ...entry },
        undefined,
        true,
        told !== SAVED,
      );
      this._note.textContent = told(result && result.response);
      this._note.dataset.saved = service;
      this._points = [];
      this._drawDraft();
    } catch (err) {
      this._note.textContent = err && err.message ? err.message : String(err);
      this._note.dataset.saved = "";
    } finally {
      this._busy = false;
    }
    // a save ends the edit: the card built again from the new config shows the plan, editor closed
    this._remember(this._note.dataset.saved ? "" : this._mode);
    for (const card of CARDS) {
      if (card !== this && card._key === this._key && card._note) {
        card._note.textContent = this._note.textContent;
        card._note.dataset.saved = this._note.dataset.saved;
      }
    }
  }

  _drawAsset(asset) {
    const unit = this._unit;
    // drawn round (0, 0) and moved as one by the group's transform
    const group = svg("g", { class: "asset hidden" });
    group.dataset.asset = asset.name;
    const spread = svg("circle", { class: "spread", r: 0, "stroke-width": unit / 10 });
    const dot = svg("circle", { class: "dot", r: unit / 2, "stroke-width": unit / 8 });
    const label = svg("text", { "font-size": unit * 1.1, dx: unit * 0.8, dy: unit * 0.4 });
    label.textContent = asset.name;
    group.append(spread, dot, label);
    group.addEventListener("click", (ev) => {
      if (this._mode) return; // editing: the click places a point
      ev.stopPropagation();
      history.pushState(null, "", asset.path);
      window.dispatchEvent(new CustomEvent("location-changed", { detail: { replace: false } }));
    });
    this._assetLayer.append(group);
    const turn = (this._drawn.size * 2.4) % (2 * Math.PI); // golden angle: spread evenly
    this._drawn.set(asset.entity, {
      group,
      spread,
      turn,
      state: undefined,
      shown: "", // what is drawn: class, where, x, y, spread radius
      where: "",
      x: undefined,
      y: undefined,
      r: 0,
    });
  }

  set hass(hass) {
    this._hass = hass;
    this._subscribe();
    this._schedule();
  }

  // many updates a second: the newest is drawn in the next frame (pending in _frame), or once
  // DRAW_EVERY_MS passed since the last draw (pending in _timer)
  _schedule() {
    if (!this._config || !this._hass || this._frame || this._timer) return;
    const wait = (this._drawnAt ?? -Infinity) + DRAW_EVERY_MS - performance.now();
    if (wait > 0) {
      this._timer = setTimeout(() => {
        this._timer = 0;
        this._nextFrame();
      }, wait);
    } else {
      this._nextFrame();
    }
  }

  _nextFrame() {
    this._frame = requestAnimationFrame(() => {
      this._frame = 0;
      this._drawnAt = performance.now();
      this._draw();
    });
  }

  _draw() {
    const hass = this._hass;
    if (this._editor) this._editor.hidden = !(hass.user && hass.user.is_admin);
    for (const [entity, node] of this._nodes) {
      const state = hass.states[entity];
      if (state === node.state) continue; // unchanged object: nothing to redraw
      node.state = state;
      const health = !state ? "unknown" : state.state === "on" ? "online" : "offline";
      node.mark.setAttribute("class", `node ${health}`);
      node.mark.dataset.health = health;
    }
    let rooms = false;
    const moved = this._moved;
    this._moved = new Set();
    for (const [entity, drawn] of this._drawn) {
      const state = hass.states[entity];
      if (state === drawn.state && !moved.has(entity)) continue;
      drawn.state = state;
      const room = drawn.room;
      this._place(drawn, state, entity);
      rooms = rooms || drawn.room !== room;
    }
    if (rooms) this._markRooms();
  }

  // a room holding assets without a position is their uncertainty: it is highlighted
  _markRooms() {
    const holding = new Set();
    for (const drawn of this._drawn.values()) if (drawn.room) holding.add(drawn.room);
    for (const [area, poly] of this._polygons) {
      const holds = holding.has(area);
      if (poly.classList.contains("holds") !== holds) {
        poly.setAttribute("class", holds ? "room holds" : "room");
      }
    }
  }

  // the subscription's position when it named the tracker, else the tracker's attributes
  _position(entity, a) {
    if (this._positions.has(entity)) return this._positions.get(entity);
    const here = a.x != null && a.y != null && a.floor === this._config.floor;
    return here ? [a.x, a.y, a.position_accuracy_m || 0] : null;
  }

  _place(drawn, state, entity) {
    const a = state ? state.attributes : {};
    const position = this._position(entity, a);
    let x, y, r, where;
    if (position) {
      [x, y, r, where] = [...position, "position"];
    } else if (a.area_id && this._rooms.has(a.area_id)) {
      const room = this._rooms.get(a.area_id);
      // several assets in one room: each on its own spot of a small ring round the centre
      const turn = drawn.turn;
      const ring = Math.min(room.radius / 2, this._unit * 6);
      x = room.centre[0] + ring * Math.cos(turn);
      y = room.centre[1] + ring * Math.sin(turn);
      [r, where] = [0, "room"];
    }
    const shown = where !== undefined && state.state === "home";
    const kind = where === "room" ? " in-room" : "";
    const cls = `asset${shown ? "" : " hidden"}${kind}`;
    const group = drawn.group;
    if (cls !== drawn.shown) group.setAttribute("class", (drawn.shown = cls));
    const said = shown ? where : "none";
    if (said !== drawn.where) group.dataset.where = drawn.where = said;
    drawn.room = shown && where === "room" ? a.area_id : undefined;
    if (!shown) return;
    if (x !== drawn.x || y !== drawn.y) {
      drawn.x = x;
      drawn.y = y;
      group.dataset.x = x;
      group.dataset.y = y;
      group.setAttribute("transform", `translate(${x} ${y})`);
    }
    if (r !== drawn.r) drawn.spread.setAttribute("r", (drawn.r = r));
  }
}

// Loaded early, as an extra module of the frontend: the element is defined once the frontend's own
// elements are, so it lands in the registry the frontend looks cards up in (defined earlier, it
// was at times missing from it and the card showed as an error).
function define() {
  if (customElements.get("asset-tracker-floor-plan")) return;
  customElements.define("asset-tracker-floor-plan", AssetTrackerFloorPlan);
  window.customCards = window.customCards || [];
  window.customCards.push({
    type: "asset-tracker-floor-plan",
    name: "Asset Tracker floor plan",
    description: "A floor plan with its rooms, nodes and the assets where they are.",
  });
}

customElements.whenDefined("home-assistant").then(define);
