// Units and times per user setting: km/h or mph, litres or US gallons, times in the
// browser's time zone.

export type SpeedUnit = "kmh" | "mph";
export type VolumeUnit = "l" | "gal";

const KEY = "clutch.units";

export interface Units {
  speed: SpeedUnit;
  volume: VolumeUnit;
}

export function loadUnits(): Units {
  try {
    const u = JSON.parse(localStorage.getItem(KEY) ?? "{}");
    return { speed: u.speed === "mph" ? "mph" : "kmh", volume: u.volume === "gal" ? "gal" : "l" };
  } catch {
    return { speed: "kmh", volume: "l" };
  }
}

export function saveUnits(u: Units) {
  localStorage.setItem(KEY, JSON.stringify(u));
}

export function speed(kmh: number | null | undefined, u: Units): string {
  if (kmh == null) return "—";
  return u.speed === "mph" ? `${(kmh / 1.609344).toFixed(0)} mph` : `${kmh.toFixed(0)} km/h`;
}

export function distance(m: number | null | undefined, u: Units): string {
  if (m == null) return "—";
  return u.speed === "mph" ? `${(m / 1609.344).toFixed(1)} mi` : `${(m / 1000).toFixed(1)} km`;
}

export function volume(l: number | null | undefined, u: Units): string {
  if (l == null) return "—";
  return u.volume === "gal" ? `${(l / 3.785411784).toFixed(1)} gal` : `${l.toFixed(1)} L`;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });

export function time(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "—" : timeFmt.format(d);
}
