// The fleet API, as the dashboard uses it: bearer tokens kept for the browser session,
// one refresh attempt on 401, and the API's error shape turned into an Error message.

export interface Tokens {
  access_token: string;
  refresh_token: string;
  expires_in: number;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

const KEY = "clutch.tokens";

export function tokens(): Tokens | null {
  const raw = sessionStorage.getItem(KEY);
  return raw ? (JSON.parse(raw) as Tokens) : null;
}

function store(t: Tokens | null) {
  if (t) sessionStorage.setItem(KEY, JSON.stringify(t));
  else sessionStorage.removeItem(KEY);
}

async function parseError(r: Response): Promise<ApiError> {
  try {
    const body = await r.json();
    return new ApiError(r.status, body?.error?.code ?? "error", body?.error?.message ?? r.statusText);
  } catch {
    return new ApiError(r.status, "error", r.statusText || `HTTP ${r.status}`);
  }
}

export async function login(email: string, password: string, totp?: string): Promise<void> {
  const r = await fetch("/api/v1/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(totp ? { email, password, totp } : { email, password }),
  });
  if (!r.ok) throw await parseError(r);
  store((await r.json()) as Tokens);
}

async function refresh(): Promise<boolean> {
  const t = tokens();
  if (!t) return false;
  const r = await fetch("/api/v1/auth/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: t.refresh_token }),
  });
  if (!r.ok) {
    store(null);
    return false;
  }
  store((await r.json()) as Tokens);
  return true;
}

export async function logout(): Promise<void> {
  const t = tokens();
  store(null);
  if (t) {
    await fetch("/api/v1/auth/logout", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${t.access_token}` },
      body: JSON.stringify({ refresh_token: t.refresh_token }),
    }).catch(() => undefined);
  }
}

export async function api<T>(path: string, init: RequestInit = {}, retried = false): Promise<T> {
  const t = tokens();
  const headers = new Headers(init.headers);
  if (t) headers.set("Authorization", `Bearer ${t.access_token}`);
  if (init.body && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
  const r = await fetch(path, { ...init, headers });
  if (r.status === 401 && !retried && (await refresh())) return api<T>(path, init, true);
  if (!r.ok) throw await parseError(r);
  if (r.status === 204) return undefined as T;
  return (await r.json()) as T;
}

export interface Page<T> {
  items: T[];
  next_cursor?: string;
}

export interface Position {
  device_id: number;
  vehicle_id: number | null;
  fix_time: string;
  lat: number;
  lon: number;
  speed_kmh: number | null;
  course: number | null;
  valid: boolean;
  ignition: boolean | null;
  fuel_level_pct: number | null;
  power_v: number | null;
  attributes: Record<string, unknown> | null;
}

export interface Vehicle {
  id: number;
  name: string;
  plate?: string | null;
}

export interface Device {
  id: number;
  identifier: string;
  protocol: string;
  name: string;
  vehicle_id: number | null;
}

export interface FleetEvent {
  /** For `POST /api/v1/events/{id}/ack`; the list and the live stream both carry it. */
  id?: string;
  device_id: number;
  vehicle_id?: number | null;
  time: string;
  end_time?: string | null;
  kind: string;
  lat?: number | null;
  lon?: number | null;
  geofence_id?: number | null;
  magnitude?: number | null;
  severity?: string | null;
  attributes?: Record<string, unknown>;
  acknowledged?: boolean;
  acknowledged_at?: string | null;
  acknowledged_by?: string | null;
}

export interface Trip {
  id: number;
  device_id: number;
  vehicle_id: number | null;
  start_time: string;
  end_time: string | null;
  distance_m: number | null;
  max_speed_kmh: number | null;
}

export interface Geofence {
  id: number;
  name: string;
  geojson: GeoJSON.GeoJsonObject & Record<string, unknown>;
  attributes: Record<string, unknown>;
}

export interface Driver {
  id: number;
  name: string;
}

export interface Score {
  subject_kind: "driver" | "vehicle" | "device";
  subject_id: number;
  period: "day" | "trip";
  period_start: string;
  distance_m: number;
  duration_s: number;
  score: number;
}

export interface FuelReport {
  events: FleetEvent[];
  refuelled_l: number;
  drained_l: number;
  trips_fuel_used_l: number;
  trips_distance_m: number;
  consumption_l_per_100km: number | null;
}

export interface ServicePlan {
  id: number;
  vehicle_id: number;
  name: string;
  every_km: number | null;
  every_days: number | null;
  last_done_at: string | null;
}

export interface DueItem {
  plan: ServicePlan;
  odometer_km: number | null;
  remaining_km: number | null;
  remaining_days: number | null;
  due: boolean;
}

/** A partner's offer for a service (the services issue's booking contract). */
export interface Match {
  partner_id: number;
  partner_name: string;
  service_id: number;
  service_name: string;
  distance_m: number | null;
  price_minor: number | null;
  currency: string | null;
  earliest_slot: string | null;
}

export interface Recommendation {
  id: number;
  vehicle_id: number;
  reason: string;
  code?: string | null;
  status: string;
  matches: Match[];
}

export interface Booking {
  id: number;
  status: string;
  start: string;
  end?: string;
  partner_id: number;
}
