// Devices: a paged, filtered list, and one device's whole story.

import { enc, get, post, q } from "../api.js";
import { lineChart } from "../charts.js";
import { ago, badge, bytes, deviceLink, facts, h, link, notice, rolloutLink, table, timeEl, when } from "../dom.js";

const PAGE = 50;
// The charts a device page draws first, when the device reports them, and the statistic.
const CHARTS = [
  ["inference.latency_ms", "p95 latency (ms)", { quantile: 0.95 }, "quantile"],
  ["inference.errors", "errors per window", {}, "sum"],
  ["inference.requests", "requests per window", {}, "sum"],
  ["host.cpu.percent", "host CPU (%)", {}, "mean"],
  ["host.memory.percent", "host memory (%)", {}, "mean"],
];

export async function renderList(ctx) {
  const status = ctx.query.get("status") || "";
  const enrollment = ctx.query.get("enrollment") || "";
  const search = ctx.query.get("search") || "";
  const page = Math.max(0, Number(ctx.query.get("page") || 0) || 0);
  const data = await get(`/v1/dashboard/devices${q({ status, enrollment, search, offset: page * PAGE, limit: PAGE })}`);
  const select = (id, label, value, options) => h("div", { class: "field" },
    h("label", { for: id }, label),
    h("select", { id, name: id }, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))));
  const form = h("form", { class: "inline", role: "search", "aria-label": "Filter devices" },
    h("div", { class: "field" }, h("label", { for: "search" }, "Name or id contains"),
      h("input", { id: "search", name: "search", type: "search", value: search })),
    select("status", "Connection", status, [["", "any"], ["online", "online"], ["stale", "stale"], ["offline", "offline"]]),
    select("enrollment", "Enrollment", enrollment, [["", "any"], ["pending", "pending"], ["approved", "approved"], ["rejected", "rejected"], ["revoked", "revoked"]]),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const f = new FormData(form);
    window.location.hash = `#/devices${q({ search: f.get("search"), status: f.get("status"), enrollment: f.get("enrollment") })}`;
  });
  const pages = Math.max(1, Math.ceil(data.total / PAGE));
  const pageLink = (n, text) => link(`#/devices${q({ search, status, enrollment, page: n })}`, text);
  const rows = table(`Devices ${data.total ? page * PAGE + 1 : 0}–${page * PAGE + data.devices.length} of ${data.total}`, [
    { title: "Name", cell: (d) => deviceLink(d.id, d.name) },
    { title: "Status", cell: (d) => badge(d.status ?? d.enrollment) },
    { title: "Last seen", cell: (d) => timeEl(d.last_seen, ago(d.last_seen)) },
    { title: "Region / site", cell: (d) => `${d.region} / ${d.site}` },
    { title: "Release", cell: (d) => (d.release ? [d.release, " ", badge(d.release_state)] : "none") },
    { title: "Labels", cell: (d) => Object.entries(d.labels).map(([k, v]) => `${k}=${v}`).join(", ") },
  ], data.devices, "no device matches.");
  const node = h("div", {}, h("h1", {}, "Devices"), form, rows,
    h("nav", { class: "pager", "aria-label": "Pages" },
      page > 0 ? pageLink(page - 1, "Previous page") : null,
      h("span", {}, `Page ${page + 1} of ${pages}`),
      page + 1 < pages ? pageLink(page + 1, "Next page") : null));
  let pending = null;
  return {
    title: "Devices", node,
    onFleet() {
      if (!pending) pending = setTimeout(async () => {
        pending = null;
        const fresh = await renderList(ctx);
        const old = node.querySelector(".table-wrap, p.hint");
        const next = fresh.node.querySelector(".table-wrap, p.hint");
        if (old && next) old.replaceWith(next);
      }, 1000);
    },
  };
}

function toPoints(series, stat) {
  return (series ? series.points : []).filter((p) => p[stat] !== null && p[stat] !== undefined)
    .map((p) => ({ t: new Date(p.time).getTime(), v: Number(p[stat]) }));
}

async function charts(device, alerts) {
  const reported = new Set(await get(`/v1/telemetry/devices/${enc(device.id)}/metrics?since=1h`));
  const chosen = CHARTS.filter(([metric]) => reported.has(metric));
  if (!chosen.length) return [h("p", { class: "hint" }, "No telemetry in the last hour.")];
  const out = [h("div", { class: "legend", "aria-hidden": "true" },
    h("span", {}, h("span", { class: "swatch line" }), "measured"),
    h("span", {}, h("span", { class: "swatch band" }), "baseline (median ± 3 MAD of the hour)"),
    h("span", {}, h("span", { class: "swatch alert" }), "anomaly or drift alert"))];
  const answers = await Promise.all(chosen.map(([metric, , extra]) =>
    get(`/v1/telemetry/query${q({ metric, device: device.id, since: "1h", ...extra })}`).catch(() => null)));
  chosen.forEach(([metric, title, , stat], i) => {
    const series = answers[i] && answers[i].series[0];
    const marks = alerts.filter((a) => a.metrics.includes(metric)).map((a) => ({
      from: new Date(a.opened_at).getTime(), to: a.closed_at ? new Date(a.closed_at).getTime() : null,
      title: `${a.kind} ${a.kpi}: ${a.open_reason}`,
    }));
    out.push(h("figure", {}, h("figcaption", {}, h("h3", {}, `${title} — ${metric}`)), lineChart(title, toPoints(series, stat), marks)));
  });
  return out;
}

function enrollmentActions(ctx, device) {
  if (!ctx.can("devices.write")) return null;
  const moves = { pending: ["approve", "reject"], approved: ["revoke"], rejected: ["approve"] }[device.enrollment] || [];
  if (!moves.length) return null;
  return h("div", { class: "actions" }, moves.map((move) => h("button", {
    type: "button", class: move === "approve" ? "" : "danger",
    onclick: async () => {
      const answer = await ctx.confirm(`${move[0].toUpperCase()}${move.slice(1)} device ${device.name}?`, move);
      if (!answer.ok) return;
      try {
        await post(`/v1/devices/${enc(device.id)}/${move}`);
        ctx.announce(`Device ${device.name}: ${move} done`);
        ctx.refresh();
      } catch (failure) { ctx.announce(failure.message); window.alert(failure.message); }
    },
  }, `${move[0].toUpperCase()}${move.slice(1)}`)));
}

export async function renderDevice(ctx) {
  const [id] = ctx.params;
  const [device, story, alerts] = await Promise.all([
    get(`/v1/devices/${enc(id)}`),
    get(`/v1/dashboard/devices/${enc(id)}`),
    get(`/v1/alerts${q({ all: true, closed_within: "24h", device: id })}`),
  ]);
  const hw = device.inventory.hardware || {};
  const sw = device.inventory.software || {};
  const loc = device.inventory.location || {};
  const rs = device.release_status || {};
  const live = story.liveness;
  const chartBox = h("div", {}, h("p", { class: "hint" }, "Loading telemetry…"));
  const node = h("div", {},
    h("h1", {}, device.name, " ", badge(device.status)),
    enrollmentActions(ctx, device),
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "identity" }, h("h2", { id: "identity" }, "Identity and enrollment"),
        facts([["Device id", h("code", {}, device.id)], ["Enrollment", badge(device.enrollment)],
          ["Enrolled", timeEl(device.created_at)], ["Labels", Object.entries(device.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "none"],
          ["In sync", device.in_sync ? "yes" : `no (applied ${device.applied_generation} of ${device.desired_generation})`]])),
      h("section", { class: "panel", "aria-labelledby": "liveness" }, h("h2", { id: "liveness" }, "Last seen and liveness"),
        facts([["Last seen", timeEl(device.last_seen, `${ago(device.last_seen)} (${when(device.last_seen)})`)],
          ["Heartbeat every", `${device.heartbeat_interval_s} s`],
          ["Liveness", live ? badge(live.state) : "not judged (no node report)"],
          live && ["Suspicion (phi)", String(live.phi)],
          live && ["Reliability", String(live.reliability)],
          live && ["Power", `${live.node.power_source || "?"}${live.node.battery_pct != null ? `, battery ${live.node.battery_pct}%` : ""}`],
          live && ["CPU load", String(live.node.cpu_load ?? "—")],
          live && ["Draining", live.draining ? `yes: ${live.drain_reason}` : "no"]])),
      h("section", { class: "panel", "aria-labelledby": "inventory" }, h("h2", { id: "inventory" }, "Inventory"),
        facts([["Hardware", `${hw.arch || "?"}, ${hw.cpu_count || "?"} CPU, ${hw.memory_mb || "?"} MB memory, ${hw.disk_mb || "?"} MB disk`],
          ["Accelerators", (hw.accelerators || []).join(", ") || "none"],
          ["Software", `${sw.os || "?"} ${sw.os_version || ""}; Python ${sw.python || "?"}; agent ${sw.agent_version || "?"}`],
          ["Location", `${loc.region || "?"} / ${loc.zone || "?"}${loc.timezone ? `, ${loc.timezone}` : ""}`]]))),
    h("section", { "aria-labelledby": "release" }, h("h2", { id: "release" }, "Release"),
      h("div", { class: "panel" }, facts([
        ["Assigned", device.release ? `${device.release.name}@${device.release.version}${device.release.stage_only ? " (staged only)" : ""}` : "none"],
        ["Reported", rs.name ? [`${rs.name}@${rs.version} `, badge(rs.state)] : "nothing yet"],
        rs.reason ? ["Reason", rs.reason] : null,
        ["Running", rs.active ? `${rs.active.name}@${rs.active.version} since ${when(rs.active_since)}` : "none"],
        ["Last good", rs.last_good ? `${rs.last_good.name}@${rs.last_good.version}` : "none known"],
        rs.bytes_total ? ["Download", `${bytes(rs.bytes_done)} of ${bytes(rs.bytes_total)}, ${bytes(rs.bytes_saved)} saved by deltas`] : null])),
      table("Rollouts that targeted this device", [
        { title: "Rollout", cell: (r) => rolloutLink(r.id, r.name) },
        { title: "Release", cell: (r) => r.release },
        { title: "Wave", cell: (r) => (r.wave == null ? "—" : r.wave + 1), num: true },
        { title: "Device state", cell: (r) => badge(r.state) },
        { title: "Previous release", cell: (r) => r.previous_release || "none" },
        { title: "Installed", cell: (r) => timeEl(r.installed_at) },
        { title: "Reason", cell: (r) => r.reason || "—" },
      ], story.rollouts, "none."),
      table("Release history: installs, failures and rollbacks", [
        { title: "At", cell: (e) => timeEl(e.at) },
        { title: "Rollout", cell: (e) => rolloutLink(e.rollout_id, e.rollout) },
        { title: "Event", cell: (e) => e.kind }, { title: "Why", cell: (e) => e.reason },
      ], story.release_events, "no rollout event about this device.")),
    h("section", { "aria-labelledby": "telemetry" }, h("h2", { id: "telemetry" }, "Telemetry (last hour)"), chartBox),
    h("section", { "aria-labelledby": "alerts" }, h("h2", { id: "alerts" }, "Alerts (open, and closed in the last 24 h)"),
      table("Alerts", [
        { title: "KPI", cell: (a) => a.kpi },
        { title: "Kind", cell: (a) => a.kind },
        { title: "Status", cell: (a) => badge(a.status) },
        { title: "Opened", cell: (a) => timeEl(a.opened_at) },
        { title: "Why", cell: (a) => a.open_reason },
        { title: "Closed", cell: (a) => (a.closed_at ? [timeEl(a.closed_at), ` ${a.close_reason}`] : "—") },
      ], alerts, "none.")),
    h("section", { "aria-labelledby": "replicas" }, h("h2", { id: "replicas" }, "Replicas hosted"),
      table("Placed here", [
        { title: "Workload", cell: (r) => link(`#/workloads/${enc(r.workload)}`, r.workload) },
        { title: "Replica", cell: (r) => r.replica, num: true },
        { title: "Generation", cell: (r) => r.generation, num: true },
      ], story.placed, "no replica is placed on this device."),
      live && live.replicas.length ? table("Reported by the agent", [
        { title: "Workload", cell: (r) => r.workload }, { title: "Replica", cell: (r) => r.replica, num: true },
        { title: "State", cell: (r) => badge(r.state) }, { title: "Health", cell: (r) => badge(r.health) },
        { title: "Restarts", cell: (r) => r.restarts ?? 0, num: true },
      ], live.replicas) : null),
    h("section", { "aria-labelledby": "audit" }, h("h2", { id: "audit" }, "Audit records about this device"),
      table("Audit", [
        { title: "Seq", cell: (r) => r.seq, num: true }, { title: "At", cell: (r) => timeEl(r.at) },
        { title: "Actor", cell: (r) => r.actor }, { title: "Action", cell: (r) => r.action },
        { title: "Details", cell: (r) => h("code", {}, JSON.stringify(r.details)) },
      ], story.audit, "none.")));
  charts(device, alerts).then((nodes) => chartBox.replaceChildren(...nodes))
    .catch((failure) => chartBox.replaceChildren(notice(`Telemetry unavailable: ${failure.message}`, "bad")));
  return { title: device.name, node };
}
