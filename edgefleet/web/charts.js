// Inline SVG line charts: the series, a baseline band and the alerts that cover it.

import { svg } from "./dom.js";

const W = 640;
const H = 180;
const PAD = { left: 48, right: 10, top: 10, bottom: 24 };

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// The band the series normally keeps to: median ± 3 scaled MADs of its values.
export function baselineBand(values) {
  if (values.length < 4) return null;
  const m = median(values);
  const mad = 1.4826 * median(values.map((v) => Math.abs(v - m)));
  return { low: m - 3 * mad, high: m + 3 * mad, median: m };
}

function label(value) {
  const a = Math.abs(value);
  if (a >= 1000) return value.toFixed(0);
  if (a >= 10) return value.toFixed(1);
  return value.toPrecision(2);
}

// points: [{t: ms, v: number}]; alerts: [{from: ms, to: ms|null, title}].
export function lineChart(title, points, alerts = []) {
  const desc = `${title}: ${points.length} points`;
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": desc });
  root.append(svg("title", {}, desc));
  if (!points.length) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data in this window"));
    return root;
  }
  const t0 = points[0].t;
  const t1 = Math.max(points[points.length - 1].t, t0 + 1);
  const values = points.map((p) => p.v);
  const band = baselineBand(values);
  let lo = Math.min(...values, band ? band.low : Infinity);
  let hi = Math.max(...values, band ? band.high : -Infinity);
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * (H - PAD.top - PAD.bottom);
  if (band) {
    root.append(svg("rect", { class: "band", x: PAD.left, width: W - PAD.left - PAD.right,
      y: y(band.high), height: Math.max(1, y(band.low) - y(band.high)) },
      svg("title", {}, `baseline ${label(band.low)}–${label(band.high)}`)));
  }
  for (const a of alerts) {
    const from = Math.max(a.from, t0);
    const to = Math.min(a.to ?? t1, t1);
    if (to < t0 || from > t1) continue;
    root.append(svg("rect", { class: "alert", x: x(from), y: PAD.top, width: Math.max(3, x(to) - x(from)),
      height: H - PAD.top - PAD.bottom }, svg("title", {}, a.title)));
    root.append(svg("line", { class: "alert-mark", x1: x(from), x2: x(from), y1: PAD.top, y2: H - PAD.bottom }));
  }
  root.append(svg("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }));
  root.append(svg("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }));
  root.append(svg("text", { x: PAD.left - 4, y: PAD.top + 10, "text-anchor": "end" }, label(hi)));
  root.append(svg("text", { x: PAD.left - 4, y: H - PAD.bottom, "text-anchor": "end" }, label(lo)));
  const fmt = (t) => new Date(t).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  root.append(svg("text", { x: PAD.left, y: H - 6 }, fmt(t0)));
  root.append(svg("text", { x: W - PAD.right, y: H - 6, "text-anchor": "end" }, fmt(t1)));
  const path = points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
  root.append(svg("path", { class: "line", d: path }));
  return root;
}
