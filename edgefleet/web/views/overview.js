// Fleet overview: counts by status, location and release, and where it hurts now.

import { get } from "../api.js";
import { ago, badge, deviceLink, h, link, pct, rolloutLink, table, timeEl } from "../dom.js";

function tile(id, label, value, href, tone) {
  return h("a", { class: `tile ${tone}`, href, id },
    h("span", { class: "n", "data-count": id }, String(value)), label);
}

function tiles(data) {
  const s = data.status;
  const pending = data.enrollment.pending || 0;
  return h("div", { class: "tiles", role: "list", "aria-label": "Fleet counts" },
    [
      tile("count-online", "online", s.online, "#/devices?status=online", "ok"),
      tile("count-stale", "stale", s.stale, "#/devices?status=stale", s.stale ? "warn" : ""),
      tile("count-offline", "offline", s.offline, "#/devices?status=offline", s.offline ? "bad" : ""),
      tile("count-pending", "waiting for approval", pending, "#/devices?enrollment=pending", pending ? "info" : ""),
      tile("count-alerts", "open alerts", data.trouble.open_alerts, "#trouble", data.trouble.open_alerts ? "bad" : ""),
      tile("count-rollouts", "active rollouts", data.active_rollouts, "#/rollouts", "info"),
    ].map((t) => { t.setAttribute("role", "listitem"); return t; }));
}

function trouble(data) {
  const t = data.trouble;
  const quiet = !t.open_alerts && !t.stale.length && !t.offline.length && !t.rollouts.length && !t.nodes.length;
  const alerts = table("Open alerts", [
    { title: "Device", cell: (a) => deviceLink(a.device_id, a.device_name) },
    { title: "KPI", cell: (a) => a.kpi },
    { title: "Kind", cell: (a) => badge(a.kind, "bad") },
    { title: "Opened", cell: (a) => timeEl(a.opened_at, ago(a.opened_at)) },
    { title: "Why", cell: (a) => a.open_reason },
  ], t.alerts, "none open.");
  const unseen = [...t.offline, ...t.stale];
  const devices = table("Devices stale or offline", [
    { title: "Device", cell: (d) => deviceLink(d.id, d.name) },
    { title: "Status", cell: (d) => badge(d.status) },
    { title: "Last seen", cell: (d) => timeEl(d.last_seen, ago(d.last_seen)) },
    { title: "Region / site", cell: (d) => `${d.region} / ${d.site}` },
  ], unseen, "every approved device is online.");
  const rollouts = table("Rollouts paused or failing (last 24 h)", [
    { title: "Rollout", cell: (r) => rolloutLink(r.id, r.name) },
    { title: "Release", cell: (r) => r.release },
    { title: "State", cell: (r) => badge(r.state) },
    { title: "Why", cell: (r) => r.reason },
  ], t.rollouts, "none.");
  const nodes = table(`Nodes near their limits (battery ≤ ${data.limits.battery_pct}%, CPU load ≥ ${data.limits.cpu_load}, or draining)`, [
    { title: "Node", cell: (n) => deviceLink(n.device_id, n.name) },
    { title: "Battery", cell: (n) => pct(n.battery_pct, 0), num: true },
    { title: "CPU load", cell: (n) => (n.cpu_load ?? "—"), num: true },
    { title: "Draining", cell: (n) => (n.draining ? badge("draining", "warn") : "no") },
    { title: "Liveness", cell: (n) => badge(n.state) },
  ], t.nodes, "none.");
  return [
    quiet ? h("p", { class: "notice ok" }, "Nothing hurts right now.") : null,
    h("div", { class: "grid" },
      h("div", { class: "panel" }, alerts),
      h("div", { class: "panel" }, devices,
        unseen.length ? h("p", {}, link("#/devices?status=offline", "All offline devices"), " · ",
          link("#/devices?status=stale", "all stale devices")) : null),
      h("div", { class: "panel" }, rollouts),
      h("div", { class: "panel" }, nodes)),
  ];
}

function breakdown(data) {
  const locations = table("Devices by region and site", [
    { title: "Region", cell: (r) => r.region },
    { title: "Site", cell: (r) => r.site },
    { title: "Devices", cell: (r) => r.devices, num: true },
    { title: "Online", cell: (r) => r.online, num: true },
  ], data.locations, "no approved devices yet.");
  const releases = table("Devices by release running", [
    { title: "Release", cell: (r) => r.release ?? "none" },
    { title: "Devices", cell: (r) => r.devices, num: true },
  ], data.releases, "no approved devices yet.");
  return h("div", { class: "grid" }, h("div", { class: "panel" }, locations), h("div", { class: "panel" }, releases));
}

export async function render(ctx) {
  const data = await get("/v1/dashboard/overview");
  const counts = h("section", { "aria-labelledby": "counts-title" },
    h("h2", { id: "counts-title", class: "visually-hidden" }, "Counts"), tiles(data));
  const hurts = h("section", { id: "trouble", "aria-labelledby": "trouble-title", tabindex: "-1" },
    h("h2", { id: "trouble-title" }, "Where it hurts now"), trouble(data));
  const spread = h("section", { "aria-labelledby": "spread-title" },
    h("h2", { id: "spread-title" }, "Where the fleet is and what it runs"), breakdown(data));
  const node = h("div", {}, h("h1", {}, "Fleet overview"),
    h("p", { class: "hint" }, "Counts update live; every figure links to the devices behind it."),
    counts, hurts, spread);
  let refetch = null;
  const refresh = async () => {
    refetch = null;
    const fresh = await get("/v1/dashboard/overview");
    hurts.replaceChildren(hurts.firstChild, ...trouble(fresh));
    spread.replaceChildren(spread.firstChild, breakdown(fresh));
  };
  return {
    title: "Fleet overview",
    node,
    painted() {
      requestAnimationFrame(() => performance.mark("edgefleet:overview-painted"));
    },
    onFleet(event) {
      const values = {
        "count-online": event.status.online, "count-stale": event.status.stale,
        "count-offline": event.status.offline, "count-pending": event.enrollment.pending || 0,
        "count-alerts": event.open_alerts,
      };
      let changed = false;
      for (const [id, value] of Object.entries(values)) {
        const el = node.querySelector(`[data-count="${id}"]`);
        if (el && el.textContent !== String(value)) { el.textContent = String(value); changed = true; }
      }
      if (changed) ctx.announce(`Fleet: ${event.status.online} online, ${event.status.stale} stale, ${event.status.offline} offline`);
      if (!refetch) refetch = setTimeout(refresh, 1000);
    },
    onRollout() {
      if (!refetch) refetch = setTimeout(refresh, 1000);
    },
  };
}
