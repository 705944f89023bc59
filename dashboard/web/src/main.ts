// The fleet dashboard: sign-in, live map, vehicle panel with today's trips and trip
// replay, events feed, geofence list and polygon/circle editor. Everything comes from
// the fleet API; live updates from its WebSocket stream.

import L from "leaflet";
import "./leaflet-global";
import "leaflet.markercluster";
import "leaflet/dist/leaflet.css";
import "leaflet.markercluster/dist/MarkerCluster.css";
import "./style.css";

import { api, ApiError, FleetEvent, Geofence, login, logout, Page, Position, tokens, Trip, Vehicle, Device } from "./api";
import { distance, loadUnits, saveUnits, speed, time, Units, volume } from "./units";

const app = document.getElementById("app")!;
let units: Units = loadUnits();

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

// ---------------------------------------------------------------- sign-in

function renderLogin(message = "") {
  app.replaceChildren();
  const email = h("input", { type: "email", id: "email", autocomplete: "username", required: "" });
  const password = h("input", { type: "password", id: "password", autocomplete: "current-password", required: "" });
  const totp = h("input", { type: "text", id: "totp", inputmode: "numeric", autocomplete: "one-time-code", pattern: "[0-9]{6}" });
  const totpRow = h("p", { class: "hidden", id: "totp-row" }, h("label", { for: "totp" }, "Two-factor code"), totp);
  const error = h("p", { class: "error", role: "alert", id: "login-error" }, message);
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "login", "aria-label": "Sign in" },
    h("h1", {}, "Clutch"),
    h("p", {}, h("label", { for: "email" }, "Email"), email),
    h("p", {}, h("label", { for: "password" }, "Password"), password),
    totpRow,
    error,
    button,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    error.textContent = "";
    try {
      await login(email.value.trim(), password.value, totp.value.trim() || undefined);
      await renderApp().catch((e) => {
        console.error("dashboard failed to start:", e);
        throw e;
      });
    } catch (e) {
      if (e instanceof ApiError && e.code === "totp_required") {
        totpRow.classList.remove("hidden");
        totp.focus();
        error.textContent = "Enter the code from your authenticator app.";
      } else {
        error.textContent = e instanceof Error ? e.message : String(e);
      }
    } finally {
      button.disabled = false;
    }
  });
  app.append(form);
  email.focus();
}

// ---------------------------------------------------------------- state

interface Live {
  pos: Position;
  marker: L.Marker;
}

const live = new Map<number, Live>(); // device id → latest
const vehicles = new Map<number, Vehicle>();
const devices = new Map<number, Device>();
const ackedKey = "clutch.acked";
const acked = new Set<string>(JSON.parse(localStorage.getItem(ackedKey) ?? "[]"));
let events: FleetEvent[] = [];
let map: L.Map;
let cluster: L.MarkerClusterGroup;
let fenceLayer: L.FeatureGroup;
let replayLayer: L.LayerGroup;
let selected: number | null = null;
let socket: WebSocket | null = null;

function label(p: Position): string {
  const v = p.vehicle_id != null ? vehicles.get(p.vehicle_id) : undefined;
  if (v) return v.name;
  const d = devices.get(p.device_id);
  return d ? d.name || d.identifier : `device ${p.device_id}`;
}

function status(p: Position): "moving" | "idle" | "stopped" | "offline" {
  const age = Date.now() - new Date(p.fix_time).getTime();
  if (age > 15 * 60_000) return "offline";
  if ((p.speed_kmh ?? 0) > 3) return "moving";
  if (p.ignition) return "idle";
  return "stopped";
}

function icon(p: Position): L.DivIcon {
  const s = status(p);
  const rot = p.course ?? 0;
  return L.divIcon({
    className: "",
    html: `<div class="vehicle ${s}" title="${label(p).replace(/"/g, "&quot;")}: ${s}"><span style="transform: rotate(${rot}deg)">▲</span></div>`,
    iconSize: [22, 22],
    iconAnchor: [11, 11],
  });
}

function upsert(p: Position) {
  if (!Number.isFinite(p.lat) || !Number.isFinite(p.lon)) return;
  const prev = live.get(p.device_id);
  if (prev && new Date(prev.pos.fix_time) > new Date(p.fix_time)) return; // late fix
  if (prev) {
    prev.pos = p;
    prev.marker.setLatLng([p.lat, p.lon]);
    prev.marker.setIcon(icon(p));
  } else {
    const marker = L.marker([p.lat, p.lon], { icon: icon(p), keyboard: true, title: label(p) });
    marker.on("click", () => select(p.device_id));
    cluster.addLayer(marker);
    live.set(p.device_id, { pos: p, marker });
  }
  renderVehicleList();
  if (selected === p.device_id) renderPanel();
}

// ---------------------------------------------------------------- layout

async function renderApp() {
  app.replaceChildren();
  const unitSel = h(
    "select",
    { id: "units", "aria-label": "Units" },
    h("option", { value: "kmh" }, "km/h, litres"),
    h("option", { value: "mph" }, "mph, gallons"),
  );
  unitSel.value = units.speed;
  unitSel.addEventListener("change", () => {
    units = unitSel.value === "mph" ? { speed: "mph", volume: "gal" } : { speed: "kmh", volume: "l" };
    saveUnits(units);
    renderVehicleList();
    renderEvents();
    renderPanel();
  });
  const signOut = h("button", { type: "button", id: "sign-out" }, "Sign out");
  signOut.addEventListener("click", async () => {
    socket?.close();
    await logout();
    renderLogin();
  });
  const header = h("header", {}, h("strong", {}, "Clutch fleet"), h("span", { id: "conn", class: "muted" }, "connecting…"), unitSel, signOut);

  const tabs = h("nav", { class: "tabs", role: "tablist" });
  const panes: Record<string, HTMLElement> = {
    vehicles: h("section", { id: "pane-vehicles", role: "tabpanel" }),
    events: h("section", { id: "pane-events", role: "tabpanel", class: "hidden" }),
    geofences: h("section", { id: "pane-geofences", role: "tabpanel", class: "hidden" }),
  };
  for (const name of Object.keys(panes)) {
    const b = h("button", { type: "button", role: "tab", id: `tab-${name}` }, name[0].toUpperCase() + name.slice(1));
    b.addEventListener("click", () => {
      for (const [n, p] of Object.entries(panes)) p.classList.toggle("hidden", n !== name);
      tabs.querySelectorAll("button").forEach((x) => x.setAttribute("aria-selected", String(x === b)));
    });
    tabs.append(b);
  }
  const sidebar = h("aside", {}, tabs, ...Object.values(panes));
  const mapEl = h("div", { id: "map", role: "application", "aria-label": "Fleet map" });
  const panel = h("section", { id: "panel", class: "hidden", "aria-label": "Vehicle details" });
  app.append(header, h("main", {}, sidebar, mapEl, panel));

  map = L.map(mapEl, { preferCanvas: true, maxZoom: 19 }).setView([48.85, 2.35], 5);
  // The tile source is configurable; without reachable tiles the map still shows
  // vehicles, fences and routes over the plain background.
  // `?tiles=<url template>` (or `?tiles=none`) sets it for this browser.
  const fromUrl = new URLSearchParams(location.search).get("tiles");
  if (fromUrl) localStorage.setItem("clutch.tiles", fromUrl);
  const tiles = localStorage.getItem("clutch.tiles") ?? "https://tile.openstreetmap.org/{z}/{x}/{y}.png";
  if (tiles !== "none") {
    L.tileLayer(tiles, { maxZoom: 19, attribution: "© OpenStreetMap contributors" }).addTo(map);
  }
  cluster = L.markerClusterGroup({ disableClusteringAtZoom: 14, chunkedLoading: true });
  map.addLayer(cluster);
  fenceLayer = L.featureGroup().addTo(map);
  replayLayer = L.layerGroup().addTo(map);

  try {
    await loadAll();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return renderLogin("Your session has ended; sign in again.");
    panes.vehicles.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not load the fleet: ${(e as Error).message}`));
  }
  connect();
}

async function loadAll() {
  panes("vehicles").replaceChildren(h("p", { class: "muted" }, "Loading…"));
  const [vs, ds, latest, evs, fences] = await Promise.all([
    api<Page<Vehicle>>("/api/v1/vehicles?limit=500"),
    api<Page<Device>>("/api/v1/devices?limit=500"),
    api<Page<Position> | Position[]>("/api/v1/positions/latest"),
    api<Page<FleetEvent>>("/api/v1/events?limit=100"),
    api<Page<Geofence>>("/api/v1/geofences?limit=500"),
  ]);
  vs.items.forEach((v) => vehicles.set(v.id, v));
  ds.items.forEach((d) => devices.set(d.id, d));
  const positions = Array.isArray(latest) ? latest : latest.items;
  positions.forEach(upsert);
  if (positions.length) map.fitBounds(L.latLngBounds(positions.map((p) => [p.lat, p.lon] as [number, number])).pad(0.2), { maxZoom: 14 });
  events = evs.items;
  renderVehicleList();
  renderEvents();
  renderFences(fences.items);
}

function panes(name: string): HTMLElement {
  return document.getElementById(`pane-${name}`)!;
}

// ---------------------------------------------------------------- live stream

function connect(attempt = 0) {
  const t = tokens();
  if (!t) return;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${proto}//${location.host}/api/v1/stream?access_token=${encodeURIComponent(t.access_token)}`);
  const conn = document.getElementById("conn");
  socket.onopen = () => {
    attempt = 0;
    if (conn) conn.textContent = "live";
  };
  socket.onmessage = (m) => {
    try {
      const msg = JSON.parse(m.data as string);
      if (msg.type === "position") upsert(msg.data as Position);
      else if (msg.type === "event") {
        events.unshift(msg.data as FleetEvent);
        events = events.slice(0, 500);
        renderEvents();
      }
    } catch {
      /* a malformed message is skipped, the stream goes on */
    }
  };
  socket.onclose = () => {
    if (conn) conn.textContent = "reconnecting…";
    if (!tokens()) return;
    // Backoff up to 30 s; the access token may have expired, so refresh via a cheap call.
    setTimeout(async () => {
      await api("/api/v1/me").catch(() => undefined);
      connect(attempt + 1);
    }, Math.min(30_000, 1000 * 2 ** attempt));
  };
}

// ---------------------------------------------------------------- vehicles

function renderVehicleList() {
  const pane = panes("vehicles");
  if (!pane) return;
  const filter = (pane.querySelector("input") as HTMLInputElement | null)?.value.toLowerCase() ?? "";
  const search = h("input", { type: "search", placeholder: "Filter vehicles", "aria-label": "Filter vehicles" });
  search.value = filter;
  search.addEventListener("input", () => renderVehicleList());
  const list = h("ul", { class: "list", id: "vehicle-list" });
  const rows = [...live.values()].map((l) => l.pos).filter((p) => label(p).toLowerCase().includes(filter));
  rows.sort((a, b) => label(a).localeCompare(label(b)));
  for (const p of rows.slice(0, 1000)) {
    const b = h(
      "button",
      { type: "button", class: `row ${status(p)}`, "data-device": String(p.device_id) },
      h("span", { class: "dot" }),
      h("span", {}, label(p)),
      h("span", { class: "muted" }, speed(p.speed_kmh, units)),
    );
    b.addEventListener("click", () => select(p.device_id));
    list.append(h("li", {}, b));
  }
  const had = document.activeElement === pane.querySelector("input");
  pane.replaceChildren(search, rows.length ? list : h("p", { class: "muted" }, "No vehicles have reported yet."));
  if (had) {
    search.focus();
    search.setSelectionRange(filter.length, filter.length);
  }
}

function select(device: number) {
  selected = device;
  // The panel opens synchronously and narrows the map: let Leaflet re-measure it first.
  void renderPanel();
  map.invalidateSize();
  const l = live.get(device);
  if (l) map.setView(l.marker.getLatLng(), Math.max(map.getZoom(), 14));
}

async function renderPanel() {
  const panel = document.getElementById("panel");
  if (!panel) return;
  const l = selected != null ? live.get(selected) : undefined;
  if (!l) {
    panel.classList.add("hidden");
    return;
  }
  const p = l.pos;
  panel.classList.remove("hidden");
  const close = h("button", { type: "button", "aria-label": "Close details" }, "×");
  close.addEventListener("click", () => {
    selected = null;
    replayLayer.clearLayers();
    panel.classList.add("hidden");
    map.invalidateSize();
  });
  const a = (p.attributes ?? {}) as Record<string, unknown>;
  const dtcs = Array.isArray(a.dtcs) ? (a.dtcs as string[]).join(", ") : "none";
  const fuelL = typeof a.fuel_l === "number" ? volume(a.fuel_l as number, units) : p.fuel_level_pct != null ? `${p.fuel_level_pct.toFixed(0)} %` : "—";
  const trips = h("ul", { class: "list", id: "trips" }, h("li", { class: "muted" }, "Loading today's trips…"));
  panel.replaceChildren(
    h("div", { class: "panel-head" }, h("h2", {}, label(p)), close),
    h(
      "dl",
      {},
      h("dt", {}, "Status"), h("dd", {}, status(p)),
      h("dt", {}, "Last fix"), h("dd", {}, time(p.fix_time)),
      h("dt", {}, "Speed"), h("dd", { id: "panel-speed" }, speed(p.speed_kmh, units)),
      h("dt", {}, "Ignition"), h("dd", {}, p.ignition == null ? "—" : p.ignition ? "on" : "off"),
      h("dt", {}, "Fuel"), h("dd", {}, fuelL),
      h("dt", {}, "Power"), h("dd", {}, p.power_v != null ? `${p.power_v.toFixed(1)} V` : "—"),
      h("dt", {}, "DTCs"), h("dd", {}, dtcs),
    ),
    h("h3", {}, "Today's trips"),
    trips,
  );
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  try {
    const q = p.vehicle_id != null ? `vehicle_id=${p.vehicle_id}` : `device_id=${p.device_id}`;
    const page = await api<Page<Trip>>(`/api/v1/trips?${q}&from=${encodeURIComponent(midnight.toISOString())}&limit=50`);
    trips.replaceChildren();
    if (!page.items.length) trips.append(h("li", { class: "muted" }, "No trips today."));
    for (const t of page.items) {
      const b = h("button", { type: "button", class: "row" }, `${time(t.start_time)} · ${distance(t.distance_m, units)}`);
      b.addEventListener("click", () => replay(t));
      trips.append(h("li", {}, b));
    }
  } catch (e) {
    trips.replaceChildren(h("li", { class: "error" }, `Trips unavailable: ${(e as Error).message}`));
  }
}

// ---------------------------------------------------------------- trip replay

async function replay(t: Trip) {
  replayLayer.clearLayers();
  const to = t.end_time ?? new Date().toISOString();
  const hist = await api<Page<Position> | Position[]>(
    `/api/v1/positions/history?device_id=${t.device_id}&from=${encodeURIComponent(t.start_time)}&to=${encodeURIComponent(to)}&limit=10000`,
  );
  const pts = (Array.isArray(hist) ? hist : hist.items).filter((p) => p.valid);
  const panel = document.getElementById("panel")!;
  panel.querySelector(".replay")?.remove();
  if (!pts.length) {
    panel.append(h("p", { class: "replay muted" }, "No positions recorded for this trip."));
    return;
  }
  const line = L.polyline(pts.map((p) => [p.lat, p.lon] as [number, number]), { color: "#2563eb", weight: 4 });
  replayLayer.addLayer(line);
  map.fitBounds(line.getBounds().pad(0.1));
  const cursor = L.circleMarker([pts[0].lat, pts[0].lon], { radius: 7, color: "#111", fillColor: "#facc15", fillOpacity: 1 });
  replayLayer.addLayer(cursor);
  const slider = h("input", { type: "range", min: "0", max: String(pts.length - 1), value: "0", id: "replay-slider", "aria-label": "Trip timeline" });
  const info = h("span", { id: "replay-info" }, `${time(pts[0].fix_time)} · ${speed(pts[0].speed_kmh, units)}`);
  const play = h("button", { type: "button", id: "replay-play" }, "Play");
  let timer: number | undefined;
  const show = (i: number) => {
    const p = pts[i];
    cursor.setLatLng([p.lat, p.lon]);
    info.textContent = `${time(p.fix_time)} · ${speed(p.speed_kmh, units)}`;
  };
  slider.addEventListener("input", () => show(Number(slider.value)));
  play.addEventListener("click", () => {
    if (timer) {
      clearInterval(timer);
      timer = undefined;
      play.textContent = "Play";
      return;
    }
    play.textContent = "Pause";
    timer = window.setInterval(() => {
      const i = Number(slider.value) + 1;
      if (i >= pts.length) {
        clearInterval(timer);
        timer = undefined;
        play.textContent = "Play";
        return;
      }
      slider.value = String(i);
      show(i);
    }, 100);
  });
  panel.append(h("div", { class: "replay" }, h("h3", {}, "Trip replay"), slider, info, play));
}

// ---------------------------------------------------------------- events

function eventKey(e: FleetEvent) {
  return `${e.device_id}|${e.kind}|${e.time}`;
}

function renderEvents() {
  const pane = panes("events");
  if (!pane) return;
  const current = (pane.querySelector("select") as HTMLSelectElement | null)?.value ?? "";
  const kinds = [...new Set(events.map((e) => e.kind))].sort();
  const filter = h("select", { "aria-label": "Event kind", id: "event-filter" }, h("option", { value: "" }, "All kinds"), ...kinds.map((k) => h("option", { value: k }, k.replace(/_/g, " "))));
  filter.value = kinds.includes(current) ? current : "";
  filter.addEventListener("change", renderEvents);
  const list = h("ul", { class: "list", id: "event-list" });
  for (const e of events.filter((e) => !filter.value || e.kind === filter.value).slice(0, 200)) {
    const key = eventKey(e);
    const ack = h("button", { type: "button", class: "ack" }, acked.has(key) ? "✓" : "Ack");
    ack.setAttribute("aria-label", `Acknowledge ${e.kind}`);
    ack.addEventListener("click", () => {
      acked.add(key);
      localStorage.setItem(ackedKey, JSON.stringify([...acked].slice(-2000)));
      renderEvents();
    });
    const who = live.get(e.device_id);
    const row = h(
      "li",
      { class: `event ${acked.has(key) ? "acked" : ""} ${e.severity ?? ""}`, "data-kind": e.kind },
      h("span", { class: "kind" }, e.kind.replace(/_/g, " ")),
      h("span", {}, who ? label(who.pos) : `device ${e.device_id}`),
      h("span", { class: "muted" }, time(e.time)),
      ack,
    );
    row.addEventListener("dblclick", () => select(e.device_id));
    list.append(row);
  }
  pane.replaceChildren(filter, list.childElementCount ? list : h("p", { class: "muted" }, "No events."));
}

// ---------------------------------------------------------------- geofences

function fenceShape(f: Geofence): L.Layer | null {
  const g = (f.geojson.type === "Feature" ? (f.geojson as Record<string, unknown>).geometry : f.geojson) as Record<string, unknown>;
  const props = (f.geojson.type === "Feature" ? (f.geojson as Record<string, unknown>).properties : f.geojson) as Record<string, unknown> | undefined;
  const radius = Number(props?.radius_m ?? (f.geojson as Record<string, unknown>).radius_m);
  if (g?.type === "Point" && Number.isFinite(radius)) {
    const [lon, lat] = g.coordinates as [number, number];
    return L.circle([lat, lon], { radius, color: "#9333ea" });
  }
  try {
    return L.geoJSON(g as unknown as GeoJSON.GeoJsonObject, { style: { color: "#9333ea" } });
  } catch {
    return null;
  }
}

function renderFences(fences: Geofence[]) {
  fenceLayer.clearLayers();
  const pane = panes("geofences");
  const list = h("ul", { class: "list", id: "fence-list" });
  for (const f of fences) {
    const s = fenceShape(f);
    if (s) {
      (s as L.Path).bindTooltip?.(f.name);
      fenceLayer.addLayer(s);
    }
    const del = h("button", { type: "button", class: "ack", "aria-label": `Delete ${f.name}` }, "Delete");
    del.addEventListener("click", async () => {
      await api(`/api/v1/geofences/${f.id}`, { method: "DELETE" });
      await reloadFences();
    });
    list.append(h("li", { class: "event" }, h("span", {}, f.name), del));
  }
  pane.replaceChildren(editor(), fences.length ? list : h("p", { class: "muted" }, "No geofences yet."));
}

async function reloadFences() {
  const fences = await api<Page<Geofence>>("/api/v1/geofences?limit=500");
  renderFences(fences.items);
}

/// Draw a polygon (click the vertices), a circle (click the centre, then a point on the
/// edge) or a corridor (click the centre line) on the map, then save it with its rules.
function editor(): HTMLElement {
  const name = h("input", { type: "text", id: "fence-name", placeholder: "Name", "aria-label": "Geofence name" });
  const shape = h(
    "select",
    { id: "fence-shape", "aria-label": "Shape" },
    h("option", { value: "polygon" }, "Polygon"),
    h("option", { value: "circle" }, "Circle"),
    h("option", { value: "corridor" }, "Corridor"),
  );
  const limit = h("input", { type: "number", min: "0", id: "fence-limit", placeholder: "Speed limit", "aria-label": "Speed limit (km/h)" });
  const dwell = h("input", { type: "number", min: "0", id: "fence-dwell", placeholder: "Dwell (s)", "aria-label": "Dwell seconds" });
  const draw = h("button", { type: "button", id: "fence-draw" }, "Draw");
  const save = h("button", { type: "button", id: "fence-save", disabled: "" }, "Save");
  const msg = h("p", { class: "muted", id: "fence-msg", role: "status" });
  let pts: L.LatLng[] = [];
  const sketch = L.layerGroup().addTo(map);
  const redraw = () => {
    sketch.clearLayers();
    if (shape.value === "circle" && pts.length === 2) sketch.addLayer(L.circle(pts[0], { radius: pts[0].distanceTo(pts[1]) }));
    else if (shape.value === "polygon" && pts.length >= 2) sketch.addLayer(L.polygon(pts));
    else if (pts.length >= 2) sketch.addLayer(L.polyline(pts, { weight: 8, opacity: 0.5 }));
    pts.forEach((p) => sketch.addLayer(L.circleMarker(p, { radius: 4 })));
    save.disabled = !(shape.value === "polygon" ? pts.length >= 3 : pts.length >= 2);
  };
  const onClick = (e: L.LeafletMouseEvent) => {
    if (shape.value === "circle" && pts.length === 2) pts = [];
    pts.push(e.latlng);
    redraw();
  };
  draw.addEventListener("click", () => {
    pts = [];
    redraw();
    map.off("click", onClick);
    map.on("click", onClick);
    msg.textContent = shape.value === "circle" ? "Click the centre, then the edge." : "Click the map to add points.";
  });
  save.addEventListener("click", async () => {
    let geojson: Record<string, unknown>;
    const ll = (p: L.LatLng) => [p.lng, p.lat];
    if (shape.value === "circle") {
      geojson = { type: "Feature", geometry: { type: "Point", coordinates: ll(pts[0]) }, properties: { radius_m: Math.round(pts[0].distanceTo(pts[1])) } };
    } else if (shape.value === "polygon") {
      const ring = [...pts, pts[0]].map(ll);
      geojson = { type: "Feature", geometry: { type: "Polygon", coordinates: [ring] }, properties: {} };
    } else {
      geojson = { type: "Feature", geometry: { type: "LineString", coordinates: pts.map(ll) }, properties: { width_m: 50 } };
    }
    const rules: Record<string, unknown> = {};
    // The geofence crate's FenceRules.
    if (limit.value) rules.speed_limit = { limit_kmh: Number(limit.value), min_duration_s: 10 };
    if (dwell.value) rules.dwell_alert_s = Number(dwell.value);
    try {
      await api("/api/v1/geofences", {
        method: "POST",
        body: JSON.stringify({ name: name.value.trim() || "Unnamed", geojson, attributes: { rules } }),
      });
      map.off("click", onClick);
      sketch.remove();
      await reloadFences();
    } catch (e) {
      msg.textContent = `Not saved: ${(e as Error).message}`;
      msg.className = "error";
    }
  });
  shape.addEventListener("change", () => {
    pts = [];
    redraw();
  });
  return h("div", { class: "editor" }, name, shape, limit, dwell, draw, save, msg);
}

// ---------------------------------------------------------------- start

window.addEventListener("error", (e) => console.warn("dashboard error:", e.message));
if (tokens()) renderApp().catch((e) => renderLogin(`Could not start: ${(e as Error).message}`));
else renderLogin();
