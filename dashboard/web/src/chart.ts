// Small SVG charts written here rather than a chart library: a sparkline and one line
// chart with event markers are a few dozen lines, and SVG keeps them crisp, printable
// and readable by screen readers (each marker has a <title>).

const NS = "http://www.w3.org/2000/svg";

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number> = {}): SVGElementTagNameMap[K] {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/** A sparkline of values (oldest first), scaled to 0–100 like scores are. */
export function sparkline(values: number[], label: string, w = 80, h = 22): SVGSVGElement {
  const s = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": label, class: "spark" });
  const t = svg("title");
  t.textContent = label;
  s.append(t);
  if (values.length === 0) return s;
  const x = (i: number) => (values.length === 1 ? w / 2 : (i / (values.length - 1)) * (w - 4) + 2);
  const y = (v: number) => h - 2 - (Math.max(0, Math.min(100, v)) / 100) * (h - 4);
  const d = values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  s.append(svg("path", { d, fill: "none", stroke: "currentColor", "stroke-width": 1.5 }));
  const last = values.length - 1;
  s.append(svg("circle", { cx: x(last), cy: y(values[last]), r: 2, fill: "currentColor" }));
  return s;
}

export interface Point {
  t: number; // epoch ms
  v: number;
}

export interface Marker {
  t: number;
  kind: "refuel" | "drain";
  label: string;
}

/**
 * A line chart of a level over time with refuel (▲, green) and drain (▼, red) markers.
 * `fmtV` formats the axis values, `fmtT` the times.
 */
export function levelChart(
  points: Point[],
  markers: Marker[],
  opts: { label: string; fmtV: (v: number) => string; fmtT: (t: number) => string; w?: number; h?: number },
): SVGSVGElement {
  const w = opts.w ?? 320;
  const h = opts.h ?? 160;
  const pad = { l: 44, r: 8, t: 10, b: 22 };
  const s = svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": opts.label, class: "chart" });
  const title = svg("title");
  title.textContent = opts.label;
  s.append(title);
  const ts = points.map((p) => p.t).concat(markers.map((m) => m.t));
  const t0 = Math.min(...ts);
  const t1 = Math.max(...ts);
  let v0 = Math.min(...points.map((p) => p.v));
  let v1 = Math.max(...points.map((p) => p.v));
  if (v1 - v0 < 1) {
    v0 -= 1;
    v1 += 1;
  }
  const x = (t: number) => pad.l + (t1 === t0 ? 0.5 : (t - t0) / (t1 - t0)) * (w - pad.l - pad.r);
  const y = (v: number) => pad.t + (1 - (v - v0) / (v1 - v0)) * (h - pad.t - pad.b);
  // Axes: three value gridlines, start and end times.
  for (const v of [v0, (v0 + v1) / 2, v1]) {
    s.append(svg("line", { x1: pad.l, x2: w - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    const tx = svg("text", { x: pad.l - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" });
    tx.textContent = opts.fmtV(v);
    s.append(tx);
  }
  for (const [t, anchor] of (t1 > t0 ? [[t0, "start"], [t1, "end"]] : [[t0, "middle"]]) as [number, string][]) {
    const tx = svg("text", { x: x(t), y: h - 6, "text-anchor": anchor, class: "axis" });
    tx.textContent = opts.fmtT(t);
    s.append(tx);
  }
  const d = points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
  s.append(svg("path", { d, class: "level" }));
  // A marker sits on the line at its time (the nearest sample's level).
  for (const m of markers) {
    let near = points[0];
    for (const p of points) if (Math.abs(p.t - m.t) < Math.abs(near.t - m.t)) near = p;
    const cx = x(m.t);
    const cy = near ? y(near.v) : pad.t;
    const g = svg("g", { class: `marker ${m.kind}`, "data-kind": m.kind });
    const tt = svg("title");
    tt.textContent = m.label;
    g.append(tt);
    g.append(svg("line", { x1: cx, x2: cx, y1: pad.t, y2: h - pad.b, class: "marker-line" }));
    const tri = m.kind === "refuel" ? `M${cx},${cy - 7} l6,10 h-12 z` : `M${cx},${cy + 7} l6,-10 h-12 z`;
    g.append(svg("path", { d: tri }));
    s.append(g);
  }
  return s;
}
