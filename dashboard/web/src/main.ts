// The fleet dashboard: sign-in, live map, vehicle panel with today's trips and trip
// replay, events feed, geofence list and polygon/circle editor. Everything comes from
// the fleet API; live updates from its WebSocket stream.

import L from "leaflet";
import "./leaflet-global";
import "leaflet.markercluster";
import "leaflet/dist/leaflet.css";
import "leaflet.markercluster/dist/MarkerCluster.css";
import "./style.css";

import {
  api,
  ApiError,
  Booking,
  Device,
  Driver,
  DueItem,
  FleetEvent,
  FuelReport,
  Geofence,
  login,
  logout,
  Page,
  Position,
  Recommendation,
  Score,
  tokens,
  Trip,
  Vehicle,
} from "./api";
import { levelChart, Marker, Point, sparkline } from "./chart";
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
  if (selected === p.device_id) updatePanel();
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
    renderScores();
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
    scores: h("section", { id: "pane-scores", role: "tabpanel", class: "hidden" }),
    maintenance: h("section", { id: "pane-maintenance", role: "tabpanel", class: "hidden" }),
  };
  // Scores and maintenance load when first opened (and on Refresh), not with the map.
  const onOpen: Record<string, () => void> = {
    scores: () => {
      renderScoresPane();
      void loadScores();
    },
    maintenance: () => void loadMaintenance(),
  };
  const opened = new Set<string>();
  for (const name of Object.keys(panes)) {
    const b = h("button", { type: "button", role: "tab", id: `tab-${name}` }, name[0].toUpperCase() + name.slice(1));
    b.setAttribute("aria-controls", `pane-${name}`);
    b.setAttribute("aria-selected", String(name === "vehicles"));
    b.addEventListener("click", () => {
      for (const [n, p] of Object.entries(panes)) p.classList.toggle("hidden", n !== name);
      tabs.querySelectorAll("button").forEach((x) => x.setAttribute("aria-selected", String(x === b)));
      // Maintenance reloads on every visit (codes come and go); scores once, then on Refresh.
      if (onOpen[name] && (!opened.has(name) || name === "maintenance")) {
        opened.add(name);
        onOpen[name]();
      }
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
    api<Page<FleetEvent>>(`/api/v1/events?${eventsQuery()}`),
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
  // The panel shows active trouble codes from the same list the Maintenance tab folds.
  void loadMaintenance();
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
        const e = msg.data as FleetEvent;
        knownKinds.add(e.kind);
        if (eventMatches(e) && !events.some((x) => x.id && x.id === e.id)) {
          // Operators report in device time, not arrival order: keep the feed newest first.
          events.push(e);
          events.sort((a, b) => b.time.localeCompare(a.time));
          events = events.slice(0, 500);
        }
        renderEvents();
        trackDtcs(e);
        if (e.device_id === selected) onSelectedEvent(e);
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

/** The panel's live facts about the selected vehicle, refreshed on every fix. */
function facts(p: Position): HTMLElement {
  const a = (p.attributes ?? {}) as Record<string, unknown>;
  const fuel =
    typeof a.fuel_level_l === "number"
      ? volume(a.fuel_level_l as number, units)
      : p.fuel_level_pct != null
        ? `${p.fuel_level_pct.toFixed(0)} %`
        : "—";
  const codes = activeDtcs.get(p.device_id);
  return h(
    "dl",
    { id: "facts" },
    h("dt", {}, "Status"), h("dd", {}, status(p)),
    h("dt", {}, "Last fix"), h("dd", {}, time(p.fix_time)),
    h("dt", {}, "Speed"), h("dd", { id: "panel-speed" }, speed(p.speed_kmh, units)),
    h("dt", {}, "Ignition"), h("dd", {}, p.ignition == null ? "—" : p.ignition ? "on" : "off"),
    h("dt", {}, "Fuel"), h("dd", { id: "panel-fuel" }, fuel),
    h("dt", {}, "Power"), h("dd", {}, p.power_v != null ? `${p.power_v.toFixed(1)} V` : "—"),
    h("dt", {}, "DTCs"), h("dd", { id: "panel-dtcs" }, codes?.length ? codes.join(", ") : "none"),
    h("dt", {}, "Score"), h("dd", { id: "panel-score" }, "—"),
  );
}

/** Keeps the panel's active trouble codes current from the live events. */
function trackDtcs(e: FleetEvent) {
  const code = String((e.attributes ?? {}).code ?? "");
  if (!code || (e.kind !== "dtc_raised" && e.kind !== "dtc_cleared")) return;
  const codes = (activeDtcs.get(e.device_id) ?? []).filter((c) => c !== code);
  if (e.kind === "dtc_raised") codes.push(code);
  activeDtcs.set(e.device_id, codes);
  if (e.device_id === selected) updatePanel();
}

/** What the panel shows that a live event of the selected vehicle changes. */
function onSelectedEvent(e: FleetEvent) {
  const l = live.get(e.device_id);
  if (!l) return;
  if (e.kind === "trip_start" || e.kind === "trip_end") void loadTrips(l.pos);
  // Scores are written as the trip ends, just after its event.
  if (e.kind === "trip_end") setTimeout(() => selected === e.device_id && void loadPanelScore(l.pos), 2000);
  if (e.kind === "refuel" || e.kind === "fuel_theft") void refreshFuel(l.pos, true);
}

let fuelLoaded = 0;

/** The fuel chart follows the live level, at most twice a minute. */
function refreshFuel(p: Position, now = false) {
  const box = document.getElementById("fuel");
  const range = document.getElementById("fuel-range") as HTMLSelectElement | null;
  if (!box || !range || (!now && Date.now() - fuelLoaded < 30_000)) return;
  void loadFuel(p, box, Number(range.value), true);
}

function updatePanel() {
  const l = selected != null ? live.get(selected) : undefined;
  const old = document.getElementById("facts");
  if (!l || !old) return;
  const score = old.querySelector("#panel-score")?.textContent ?? "—";
  const fresh = facts(l.pos);
  fresh.querySelector("#panel-score")!.textContent = score;
  old.replaceWith(fresh);
  refreshFuel(l.pos);
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
  const trips = h("ul", { class: "list", id: "trips" }, h("li", { class: "muted" }, "Loading today's trips…"));
  const fuelRange = h(
    "select",
    { id: "fuel-range", "aria-label": "Fuel chart period" },
    h("option", { value: "24" }, "Last 24 hours"),
    h("option", { value: "168" }, "Last 7 days"),
  );
  const fuelBox = h("div", { id: "fuel", "aria-live": "polite" });
  fuelRange.addEventListener("change", () => void loadFuel(p, fuelBox, Number(fuelRange.value)));
  panel.replaceChildren(
    h("div", { class: "panel-head" }, h("h2", {}, label(p)), close),
    facts(p),
    h("h3", {}, "Today's trips"),
    trips,
    h("div", { class: "panel-head" }, h("h3", {}, "Fuel"), fuelRange),
    fuelBox,
  );
  void loadFuel(p, fuelBox, Number(fuelRange.value));
  void loadPanelScore(p);
  await loadTrips(p);
}

/** Today's trips of the selected vehicle, each opening its replay. */
async function loadTrips(p: Position) {
  const trips = document.getElementById("trips");
  if (!trips) return;
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

/** The device's latest day score, in the panel. */
async function loadPanelScore(p: Position) {
  try {
    const from = new Date(Date.now() - 30 * 86_400_000).toISOString();
    const s = await api<Page<Score>>(`/api/v1/scores?subject_kind=device&subject_id=${p.device_id}&from=${encodeURIComponent(from)}`);
    const last = s.items[s.items.length - 1];
    const el = document.getElementById("panel-score");
    if (el && selected === p.device_id) el.textContent = last ? `${last.score.toFixed(0)} / 100 (${new Date(last.period_start).toLocaleDateString()})` : "no trips scored yet";
  } catch {
    /* the score is a nicety in the panel; the Scores tab shows errors */
  }
}

/** The fuel level over the period with detected refuels and drains marked. */
async function loadFuel(p: Position, box: HTMLElement, hours: number, quiet = false) {
  fuelLoaded = Date.now();
  // A live refresh keeps the old chart until the new one is ready.
  if (!quiet) box.replaceChildren(h("p", { class: "muted" }, "Loading fuel…"));
  box.setAttribute("aria-busy", "true");
  const to = new Date();
  const from = new Date(to.getTime() - hours * 3_600_000);
  const range = `from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`;
  try {
    const [hist, report] = await Promise.all([
      api<Page<Position> | Position[]>(
        `/api/v1/positions/history?device_id=${p.device_id}&${range}&limit=20000${hours > 24 ? "&downsample_s=120" : ""}`,
      ),
      api<FuelReport>(`/api/v1/fuel?device_id=${p.device_id}&${range}`),
    ]);
    const fixes = Array.isArray(hist) ? hist : hist.items;
    const litres = fixes.some((f) => typeof f.attributes?.fuel_level_l === "number");
    const points: Point[] = [];
    for (const f of fixes) {
      const v = litres ? f.attributes?.fuel_level_l : f.fuel_level_pct;
      if (typeof v === "number" && Number.isFinite(v)) points.push({ t: new Date(f.fix_time).getTime(), v });
    }
    const toUnit = (l: number) => (units.volume === "gal" ? l / 3.785411784 : l);
    const unit = litres ? (units.volume === "gal" ? "gal" : "L") : "%";
    const shown = litres ? points.map((q) => ({ t: q.t, v: toUnit(q.v) })) : points;
    const markers: Marker[] = report.events
      .filter((e) => e.kind === "refuel" || e.kind === "fuel_theft")
      .map((e) => {
        const pct = Number((e.attributes ?? {}).percent);
        const size = e.magnitude != null ? volume(e.magnitude, units) : Number.isFinite(pct) ? `${pct.toFixed(0)} %` : "";
        const what = e.kind === "refuel" ? "Refuel" : "Drain";
        return { t: new Date(e.time).getTime(), kind: e.kind === "refuel" ? "refuel" : "drain", label: `${what} ${size} at ${time(e.time)}` };
      });
    box.removeAttribute("aria-busy");
    if (!points.length) {
      box.replaceChildren(h("p", { class: "muted", id: "fuel-empty" }, "No fuel level reported in this period."));
      return;
    }
    const fmtT = (t: number) =>
      new Intl.DateTimeFormat(undefined, hours > 24 ? { month: "short", day: "numeric" } : { hour: "2-digit", minute: "2-digit" }).format(t);
    const chart = levelChart(shown, markers, {
      label: `Fuel level, ${unit}, with ${markers.length} refuel or drain marks`,
      fmtV: (v) => `${v.toFixed(0)} ${unit}`,
      fmtT,
    });
    chart.id = "fuel-chart";
    const list = h("ul", { class: "list", id: "fuel-events" });
    for (const m of markers) list.append(h("li", { class: `fuel-mark ${m.kind}`, "data-kind": m.kind }, m.label));
    box.replaceChildren(
      chart,
      markers.length ? list : h("p", { class: "muted" }, "No refuels or drains detected."),
      h("p", { class: "muted" }, `Refuelled ${volume(report.refuelled_l, units)} · drained ${volume(report.drained_l, units)}`),
    );
  } catch (e) {
    box.removeAttribute("aria-busy");
    box.replaceChildren(h("p", { class: "error", role: "alert" }, `Fuel unavailable: ${(e as Error).message}`));
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

const ackFilterKey = "clutch.events.ack";

/** The feed's server-side filters: kind and acknowledged state, newest first. */
function eventsQuery(): string {
  const q = new URLSearchParams({ order: "desc", limit: "200" });
  const kind = (document.getElementById("event-filter") as HTMLSelectElement | null)?.value;
  const ack = (document.getElementById("event-ack-filter") as HTMLSelectElement | null)?.value ?? localStorage.getItem(ackFilterKey) ?? "";
  if (kind) q.set("kind", kind);
  if (ack) q.set("acknowledged", ack);
  return q.toString();
}

async function reloadEvents() {
  const list = document.getElementById("event-list");
  list?.setAttribute("aria-busy", "true");
  try {
    events = (await api<Page<FleetEvent>>(`/api/v1/events?${eventsQuery()}`)).items;
    eventsError = "";
  } catch (e) {
    eventsError = `Could not load events: ${(e as Error).message}`;
  }
  renderEvents();
}

let eventsError = "";
const knownKinds = new Set<string>();

/** Does a live event belong in the feed as currently filtered? */
function eventMatches(e: FleetEvent): boolean {
  const kind = (document.getElementById("event-filter") as HTMLSelectElement | null)?.value;
  const ack = (document.getElementById("event-ack-filter") as HTMLSelectElement | null)?.value;
  return (!kind || e.kind === kind) && ack !== "true";
}

async function acknowledge(e: FleetEvent, button: HTMLButtonElement, msg: HTMLElement) {
  if (!e.id) return;
  button.disabled = true;
  button.textContent = "…";
  try {
    const done = await api<FleetEvent>(`/api/v1/events/${encodeURIComponent(e.id)}/ack`, { method: "POST" });
    Object.assign(e, done);
    renderEvents();
    document.querySelector<HTMLElement>(`#event-list li[data-id="${CSS.escape(e.id)}"] .ack-state`)?.focus();
  } catch (err) {
    button.disabled = false;
    button.textContent = "Ack";
    msg.textContent =
      err instanceof ApiError && err.status === 403
        ? "Your role cannot acknowledge events."
        : err instanceof ApiError && err.status === 404
          ? "This event is not stored yet; try again in a moment."
          : `Not acknowledged: ${(err as Error).message}`;
  }
}

function renderEvents() {
  const pane = panes("events");
  if (!pane) return;
  const current = (pane.querySelector("#event-filter") as HTMLSelectElement | null)?.value ?? "";
  const currentAck = (pane.querySelector("#event-ack-filter") as HTMLSelectElement | null)?.value ?? localStorage.getItem(ackFilterKey) ?? "";
  events.forEach((e) => knownKinds.add(e.kind));
  const kinds = [...knownKinds].sort();
  const filter = h("select", { "aria-label": "Event kind", id: "event-filter" }, h("option", { value: "" }, "All kinds"), ...kinds.map((k) => h("option", { value: k }, k.replace(/_/g, " "))));
  filter.value = kinds.includes(current) ? current : "";
  const ackFilter = h(
    "select",
    { "aria-label": "Acknowledged", id: "event-ack-filter" },
    h("option", { value: "" }, "All"),
    h("option", { value: "false" }, "Unacknowledged"),
    h("option", { value: "true" }, "Acknowledged"),
  );
  ackFilter.value = currentAck;
  filter.addEventListener("change", () => void reloadEvents());
  ackFilter.addEventListener("change", () => {
    localStorage.setItem(ackFilterKey, ackFilter.value);
    void reloadEvents();
  });
  const msg = h("p", { class: "error", role: "alert", id: "event-msg" });
  const list = h("ul", { class: "list", id: "event-list" });
  for (const e of events.slice(0, 200)) {
    let state: HTMLElement;
    if (e.acknowledged) {
      const by = e.acknowledged_by ? ` by ${e.acknowledged_by}` : "";
      state = h("span", { class: "ack-state", tabindex: "-1", title: `Acknowledged${by} ${time(e.acknowledged_at)}` }, "✓");
      state.setAttribute("aria-label", `Acknowledged${by} ${time(e.acknowledged_at)}`);
    } else {
      const ack = h("button", { type: "button", class: "ack" }, "Ack");
      ack.setAttribute("aria-label", `Acknowledge ${e.kind.replace(/_/g, " ")} of ${time(e.time)}`);
      if (!e.id) ack.disabled = true;
      ack.addEventListener("click", () => void acknowledge(e, ack, msg));
      state = ack;
    }
    const who = live.get(e.device_id);
    const row = h(
      "li",
      { class: `event ${e.acknowledged ? "acked" : ""} ${e.severity ?? ""}`, "data-kind": e.kind, "data-id": e.id ?? "" },
      h("span", { class: "kind" }, e.kind.replace(/_/g, " ")),
      h("span", {}, who ? label(who.pos) : `device ${e.device_id}`),
      h("span", { class: "muted" }, time(e.time)),
      state,
    );
    row.addEventListener("dblclick", () => select(e.device_id));
    list.append(row);
  }
  const body = eventsError
    ? h("p", { class: "error", role: "alert" }, eventsError)
    : list.childElementCount
      ? list
      : h("p", { class: "muted" }, currentAck === "false" ? "Nothing left to acknowledge." : "No events in the last 7 days.");
  pane.replaceChildren(h("div", { class: "filters" }, filter, ackFilter), msg, body);
}

// ---------------------------------------------------------------- driver scores

type ScoreKind = "driver" | "vehicle" | "device";
type ScoreCol = "name" | "score" | "delta" | "distance";

interface ScoreRow {
  id: number;
  name: string;
  /** Distance-weighted mean of the day scores in the last 14 days, and the 14 before. */
  score: number | null;
  previous: number | null;
  delta: number | null;
  distance: number;
  /** Day scores, oldest first, for the sparkline. */
  days: number[];
}

const PERIOD_DAYS = 14;
const scoreSort: { col: ScoreCol; desc: boolean } = { col: "score", desc: false };
let scoreRows: ScoreRow[] = [];
let scoreKind: ScoreKind = "driver";
const drivers = new Map<number, Driver>();

function weighted(xs: Score[]): number | null {
  const dist = xs.reduce((a, s) => a + Math.max(s.distance_m, 0), 0);
  if (!xs.length) return null;
  if (dist <= 0) return xs.reduce((a, s) => a + s.score, 0) / xs.length;
  return xs.reduce((a, s) => a + s.score * Math.max(s.distance_m, 0), 0) / dist;
}

function subjectName(kind: ScoreKind, id: number): string {
  if (kind === "driver") return drivers.get(id)?.name ?? `driver ${id}`;
  if (kind === "vehicle") return vehicles.get(id)?.name ?? `vehicle ${id}`;
  const d = devices.get(id);
  return d ? d.name || d.identifier : `device ${id}`;
}

async function loadScores() {
  const pane = panes("scores");
  const body = document.getElementById("scores-body") ?? pane;
  body.replaceChildren(h("p", { class: "muted" }, "Loading scores…"));
  const now = Date.now();
  const from = new Date(now - 2 * PERIOD_DAYS * 86_400_000);
  from.setUTCHours(0, 0, 0, 0);
  try {
    const [s, ds] = await Promise.all([
      api<Page<Score>>(`/api/v1/scores?period=day&subject_kind=${scoreKind}&from=${encodeURIComponent(from.toISOString())}`),
      scoreKind === "driver" ? api<Page<Driver>>("/api/v1/drivers?limit=500") : Promise.resolve(null),
    ]);
    ds?.items.forEach((d) => drivers.set(d.id, d));
    const cut = now - PERIOD_DAYS * 86_400_000;
    const by = new Map<number, Score[]>();
    for (const x of s.items) by.set(x.subject_id, [...(by.get(x.subject_id) ?? []), x]);
    scoreRows = [...by.entries()].map(([id, xs]) => {
      xs.sort((a, b) => a.period_start.localeCompare(b.period_start));
      const cur = xs.filter((x) => new Date(x.period_start).getTime() >= cut);
      const prev = xs.filter((x) => new Date(x.period_start).getTime() < cut);
      const score = weighted(cur);
      const previous = weighted(prev);
      return {
        id,
        name: subjectName(scoreKind, id),
        score,
        previous,
        delta: score != null && previous != null ? score - previous : null,
        distance: cur.reduce((a, x) => a + x.distance_m, 0),
        days: xs.map((x) => x.score),
      };
    });
    renderScores();
  } catch (e) {
    body.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not load scores: ${(e as Error).message}`));
  }
}

function renderScoresPane() {
  const pane = panes("scores");
  const kind = h(
    "select",
    { id: "score-kind", "aria-label": "Scores of" },
    h("option", { value: "driver" }, "Drivers"),
    h("option", { value: "vehicle" }, "Vehicles"),
    h("option", { value: "device" }, "Devices"),
  );
  kind.value = scoreKind;
  kind.addEventListener("change", () => {
    scoreKind = kind.value as ScoreKind;
    void loadScores();
  });
  const refresh = h("button", { type: "button", id: "score-refresh" }, "Refresh");
  refresh.addEventListener("click", () => void loadScores());
  pane.replaceChildren(
    h("div", { class: "filters" }, kind, refresh),
    h("p", { class: "muted small" }, `Safety score (0–100) over the last ${PERIOD_DAYS} days, weighted by distance; trend against the ${PERIOD_DAYS} days before.`),
    h("div", { id: "scores-body" }),
  );
}

function renderScores() {
  const body = document.getElementById("scores-body");
  if (!body) return;
  if (!scoreRows.length) {
    body.replaceChildren(h("p", { class: "muted", id: "scores-empty" }, `No ${scoreKind} scores yet: scores appear once trips end.`));
    return;
  }
  const val = (r: ScoreRow): number | string => {
    switch (scoreSort.col) {
      case "name":
        return r.name.toLowerCase();
      case "score":
        return r.score ?? -1;
      case "delta":
        return r.delta ?? -1000;
      case "distance":
        return r.distance;
    }
  };
  const rows = [...scoreRows].sort((a, b) => {
    const x = val(a);
    const y = val(b);
    const c = typeof x === "string" ? x.localeCompare(y as string) : x - (y as number);
    return scoreSort.desc ? -c : c;
  });
  const head = h("tr", {});
  const cols: [ScoreCol | null, string][] = [["name", "Name"], ["score", "Score"], [null, "Trend"], ["delta", "Δ"], ["distance", "Distance"]];
  for (const [col, text] of cols) {
    if (!col) {
      head.append(h("th", { scope: "col" }, text));
      continue;
    }
    const active = scoreSort.col === col;
    const b = h("button", { type: "button", class: "sort", "data-col": col }, text, active ? (scoreSort.desc ? " ▼" : " ▲") : "");
    b.addEventListener("click", () => {
      scoreSort.desc = active ? !scoreSort.desc : col !== "name" && col !== "score";
      scoreSort.col = col;
      renderScores();
      document.querySelector<HTMLButtonElement>(`#scores-table button[data-col="${col}"]`)?.focus();
    });
    head.append(h("th", { scope: "col", "aria-sort": active ? (scoreSort.desc ? "descending" : "ascending") : "none" }, b));
  }
  const tbody = h("tbody", {});
  for (const r of rows) {
    const delta = r.delta == null ? "—" : `${r.delta > 0 ? "+" : ""}${r.delta.toFixed(1)}`;
    const trendLabel = `${r.name}: ${r.days.length} daily scores${r.delta != null ? `, ${delta} vs the previous ${PERIOD_DAYS} days` : ""}`;
    tbody.append(
      h(
        "tr",
        { "data-id": String(r.id) },
        h("th", { scope: "row" }, r.name),
        h("td", { class: `num band-${r.score == null ? "none" : r.score >= 80 ? "good" : r.score >= 60 ? "fair" : "poor"}` }, r.score == null ? "—" : r.score.toFixed(0)),
        h("td", { class: `trend ${r.delta == null ? "" : r.delta >= 0 ? "up" : "down"}` }, sparkline(r.days, trendLabel)),
        h("td", { class: "num" }, delta),
        h("td", { class: "num" }, distance(r.distance, units)),
      ),
    );
  }
  body.replaceChildren(h("table", { id: "scores-table", class: "table" }, h("thead", {}, head), tbody));
}

// ---------------------------------------------------------------- maintenance

/** Device id → codes currently raised (raised and not cleared since), for the panel. */
const activeDtcs = new Map<number, string[]>();

interface DtcRow {
  device_id: number;
  vehicle_id: number | null;
  code: string;
  description: string;
  severity: string;
  raised: string;
  cleared: string | null;
}

/** Folds `dtc_raised` / `dtc_cleared` (and plain `dtc`) events into one row per code. */
function foldDtcs(evs: FleetEvent[]): DtcRow[] {
  const rows = new Map<string, DtcRow>();
  const sorted = [...evs].sort((a, b) => a.time.localeCompare(b.time));
  for (const e of sorted) {
    const a = e.attributes ?? {};
    const code = String(a.code ?? "").trim();
    if (!code) continue;
    const key = `${e.device_id}|${code}`;
    if (e.kind === "dtc_cleared") {
      const r = rows.get(key);
      if (r) r.cleared = e.time;
      continue;
    }
    rows.set(key, {
      device_id: e.device_id,
      vehicle_id: e.vehicle_id ?? null,
      code,
      description: String(a.description ?? ""),
      severity: e.severity ?? "",
      raised: e.time,
      cleared: null,
    });
  }
  return [...rows.values()].sort((a, b) => Number(a.cleared != null) - Number(b.cleared != null) || b.raised.localeCompare(a.raised));
}

function deviceName(device: number): string {
  const l = live.get(device);
  if (l) return label(l.pos);
  const d = devices.get(device);
  return d ? d.name || d.identifier : `device ${device}`;
}

function bookButton(vehicle: number | null, reason: string): HTMLButtonElement {
  const b = h("button", { type: "button", class: "book" }, "Book a service");
  if (vehicle == null) {
    b.disabled = true;
    b.title = "Assign the device to a vehicle to book a service";
  }
  b.setAttribute("aria-label", `Book a service for ${reason}`);
  b.addEventListener("click", () => vehicle != null && void openBooking(vehicle, reason, b));
  return b;
}

async function loadMaintenance() {
  const pane = panes("maintenance");
  const refresh = h("button", { type: "button", id: "maint-refresh" }, "Refresh");
  refresh.addEventListener("click", () => void loadMaintenance());
  const dtcBox = h("div", { id: "dtcs" }, h("p", { class: "muted" }, "Loading trouble codes…"));
  const dueBox = h("div", { id: "due" }, h("p", { class: "muted" }, "Loading service plans…"));
  pane.replaceChildren(h("div", { class: "filters" }, refresh), h("h3", {}, "Trouble codes"), dtcBox, h("h3", {}, "Service due"), dueBox);
  const from = new Date(Date.now() - 30 * 86_400_000).toISOString();
  const [dtcs, due] = await Promise.allSettled([
    api<Page<FleetEvent>>(`/api/v1/maintenance/dtcs?from=${encodeURIComponent(from)}&order=desc&limit=500`),
    api<Page<DueItem>>("/api/v1/maintenance/due"),
  ]);
  if (dtcs.status === "fulfilled") {
    const rows = foldDtcs(dtcs.value.items);
    activeDtcs.clear();
    for (const r of rows) if (!r.cleared) activeDtcs.set(r.device_id, [...(activeDtcs.get(r.device_id) ?? []), r.code]);
    updatePanel();
    const list = h("ul", { class: "list", id: "dtc-list" });
    for (const r of rows) {
      list.append(
        h(
          "li",
          { class: `event ${r.cleared ? "acked" : ""} ${r.severity}`, "data-code": r.code },
          h("span", { class: "kind code" }, r.code, r.description ? h("span", { class: "muted desc" }, ` ${r.description}`) : ""),
          h("span", {}, deviceName(r.device_id)),
          h("span", { class: "muted" }, r.cleared ? `cleared ${time(r.cleared)}` : `active since ${time(r.raised)}`),
          r.cleared ? h("span", {}) : bookButton(r.vehicle_id, `${r.code} on ${deviceName(r.device_id)}`),
        ),
      );
    }
    dtcBox.replaceChildren(rows.length ? list : h("p", { class: "muted" }, "No trouble codes in the last 30 days."));
  } else {
    dtcBox.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not load trouble codes: ${(dtcs.reason as Error).message}`));
  }
  if (due.status === "fulfilled") {
    const items = [...due.value.items].sort((a, b) => Number(b.due) - Number(a.due) || (a.remaining_days ?? 1e9) - (b.remaining_days ?? 1e9));
    const list = h("ul", { class: "list", id: "due-list" });
    for (const d of items) {
      const left: string[] = [];
      if (d.remaining_km != null) left.push(d.remaining_km <= 0 ? `${distance(-d.remaining_km * 1000, units)} overdue` : `${distance(d.remaining_km * 1000, units)} left`);
      if (d.remaining_days != null) left.push(d.remaining_days <= 0 ? `${Math.ceil(-d.remaining_days)} days overdue` : `${Math.floor(d.remaining_days)} days left`);
      const v = vehicles.get(d.plan.vehicle_id);
      list.append(
        h(
          "li",
          { class: `event ${d.due ? "high" : ""}`, "data-plan": String(d.plan.id) },
          h("span", { class: "kind" }, d.plan.name, d.due ? h("span", { class: "badge" }, "due") : ""),
          h("span", {}, v?.name ?? `vehicle ${d.plan.vehicle_id}`),
          h("span", { class: "muted" }, left.join(" · ") || "—"),
          bookButton(d.plan.vehicle_id, `${d.plan.name} on ${v?.name ?? `vehicle ${d.plan.vehicle_id}`}`),
        ),
      );
    }
    dueBox.replaceChildren(items.length ? list : h("p", { class: "muted" }, "No service plans. Add them with POST /api/v1/service-plans."));
  } else {
    dueBox.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not load service plans: ${(due.reason as Error).message}`));
  }
}

function money(minor: number | null, currency: string | null): string {
  if (minor == null) return "price on request";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: currency ?? "EUR" }).format(minor / 100);
  } catch {
    return `${(minor / 100).toFixed(2)} ${currency ?? ""}`;
  }
}

/** The booking dialog: the vehicle's service recommendations and their partner offers. */
async function openBooking(vehicle: number, reason: string, opener: HTMLElement) {
  document.getElementById("booking")?.remove();
  const close = h("button", { type: "button", id: "booking-close" }, "Close");
  const body = h("div", { id: "booking-body", "aria-live": "polite" }, h("p", { class: "muted" }, "Looking for service offers…"));
  const dlg = h(
    "dialog",
    { id: "booking", "aria-labelledby": "booking-title" },
    h("div", { class: "panel-head" }, h("h2", { id: "booking-title" }, "Book a service"), close),
    h("p", { class: "muted" }, reason),
    body,
  );
  close.addEventListener("click", () => dlg.close());
  dlg.addEventListener("close", () => {
    dlg.remove();
    opener.focus();
  });
  document.body.append(dlg);
  dlg.showModal();
  const unavailable = () =>
    body.replaceChildren(h("p", { class: "muted", id: "booking-unavailable" }, "Booking is not available on this server."));
  let recs: Recommendation[];
  try {
    recs = (await api<{ items: Recommendation[] }>(`/api/v1/recommendations?vehicle_id=${vehicle}`)).items;
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 501 || e.status === 405)) return unavailable();
    body.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not load offers: ${(e as Error).message}`));
    return;
  }
  const open = recs.filter((r) => r.status !== "accepted" && r.status !== "dismissed" && r.status !== "booked");
  if (!open.length) {
    body.replaceChildren(h("p", { class: "muted", id: "booking-none" }, "No open service recommendation for this vehicle yet."));
    return;
  }
  body.replaceChildren();
  for (const r of open) {
    const list = h("ul", { class: "list offers" });
    for (const m of r.matches) {
      const b = h("button", { type: "button", class: "book" }, "Book");
      b.setAttribute("aria-label", `Book ${m.service_name} at ${m.partner_name}`);
      b.disabled = !m.earliest_slot;
      const msg = h("span", { class: "muted", role: "status" });
      b.addEventListener("click", async () => {
        b.disabled = true;
        msg.textContent = "Booking…";
        try {
          const bk = await api<Booking>(`/api/v1/recommendations/${r.id}/accept`, {
            method: "POST",
            body: JSON.stringify({ partner_id: m.partner_id, service_id: m.service_id, start: m.earliest_slot }),
          });
          msg.textContent = "";
          body.replaceChildren(h("p", { id: "booking-done", role: "status" }, `Booked ${m.service_name} at ${m.partner_name} for ${time(bk.start)} (${bk.status}).`));
          close.focus();
        } catch (e) {
          b.disabled = false;
          msg.textContent = "";
          if (e instanceof ApiError && (e.status === 404 || e.status === 501 || e.status === 405)) return unavailable();
          msg.className = "error";
          msg.textContent = e instanceof ApiError && e.status === 409 ? "That slot was just taken; pick another." : `Not booked: ${(e as Error).message}`;
        }
      });
      list.append(
        h(
          "li",
          { class: "event" },
          h("span", { class: "kind" }, `${m.service_name} — ${m.partner_name}`),
          h("span", {}, `${money(m.price_minor, m.currency)} · ${m.distance_m != null ? distance(m.distance_m, units) : "—"} away`),
          h("span", { class: "muted" }, m.earliest_slot ? `earliest ${time(m.earliest_slot)}` : "no free slot"),
          b,
          msg,
        ),
      );
    }
    body.append(
      h("h3", {}, r.code ? `${r.reason} (${r.code})` : r.reason),
      r.matches.length ? list : h("p", { class: "muted" }, "No partner offers this service nearby."),
    );
  }
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
  // The panel shows active trouble codes from the same list the Maintenance tab folds.
  void loadMaintenance();
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
