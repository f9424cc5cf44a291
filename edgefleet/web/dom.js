// DOM building with text nodes only: nothing the server sends is ever parsed as HTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const TONES = {
  online: "ok", installed: "ok", succeeded: "ok", pass: "ok", approved: "ok", alive: "ok",
  healthy: "ok", running: "ok", true: "ok", done: "ok", signed: "ok", verified: "ok",
  stale: "warn", paused: "warn", pending: "warn", soaking: "info", progressing: "info",
  updating: "info", suspect: "warn", wait: "warn", "rolling-back": "warn", open: "bad",
  offline: "bad", failed: "bad", fail: "bad", "rolled-back": "bad", aborted: "bad",
  rejected: "bad", revoked: "bad", dead: "bad", unsigned: "bad", broken: "bad",
};

export function badge(text, tone) {
  const value = text === null || text === undefined ? "—" : String(text);
  return h("span", { class: `badge ${tone || TONES[value] || "muted"}` }, value);
}

export function when(iso) {
  if (!iso) return "—";
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return String(iso);
  return at.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

export function timeEl(iso, text) {
  return h("time", { datetime: iso || null, title: iso ? when(iso) : null }, text ?? when(iso));
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function pct(value, digits = 1) {
  return value === null || value === undefined ? "—" : `${Number(value).toFixed(digits)}%`;
}

// A table with a caption and column headers; `columns`: [{title, cell: row => node, num}].
export function table(caption, columns, rows, empty = "Nothing to show.") {
  if (!rows.length) return h("p", { class: "hint" }, `${caption}: ${empty}`);
  // The wrapper scrolls a table wider than the screen (a tablet): it takes the keyboard focus
  // so that it can be scrolled without a pointer, and is named after its table.
  return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    h("table", {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.title)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : null }, c.cell(row))))))));
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

export function link(href, text) {
  return h("a", { href }, text);
}

export function deviceLink(id, name) {
  return link(`#/devices/${encodeURIComponent(id)}`, name || id);
}

export function rolloutLink(id, name) {
  return link(`#/rollouts/${encodeURIComponent(id)}`, name || id);
}

export function notice(text, tone = "") {
  return h("p", { class: `notice ${tone}` }, text);
}
