// Workloads: where each replica runs and why, endpoint weights, migrations, failovers.

import { enc, get } from "../api.js";
import { badge, deviceLink, h, link, table, timeEl } from "../dom.js";

export async function renderList() {
  const workloads = await get("/v1/workloads");
  const list = table("Workloads", [
    { title: "Workload", cell: (w) => link(`#/workloads/${enc(w.name)}`, w.name) },
    { title: "Replicas", cell: (w) => w.replicas, num: true },
    { title: "Releases", cell: (w) => w.releases.join(", ") },
    { title: "Placed on", cell: (w) => w.placement.map((p) => (p.node_id ? deviceLink(p.node_id, p.node) : "unplaced"))
      .flatMap((n, i) => (i ? [", ", n] : [n])) },
    { title: "Migrations", cell: (w) => w.migrations.filter((m) => !["done", "aborted", "failed"].includes(m.state)).length, num: true },
  ], workloads, "none declared (apply a Workload manifest).");
  return { title: "Workloads", node: h("div", {}, h("h1", {}, "Workloads"), h("div", { class: "panel" }, list)) };
}

function explanation(result) {
  return result.replicas.map((round) => table(`Replica ${round.replica ?? "?"}: every candidate node`, [
    { title: "Node", cell: (c) => deviceLink(c.node_id, c.node) },
    { title: "Outcome", cell: (c) => (c.outcome.startsWith("chosen") ? badge(c.outcome, "ok") : c.outcome) },
    { title: "Excluded by (hard constraint)", cell: (c) => c.excluded_by || "—" },
    { title: "Score terms", cell: (c) => (c.terms ? Object.entries(c.terms).filter(([k]) => k !== "total")
      .map(([k, v]) => `${k} ${v}`).join(", ") : "—") },
    { title: "Total", cell: (c) => c.total ?? "—", num: true },
  ], round.candidates));
}

export async function renderWorkload(ctx) {
  const [name] = ctx.params;
  const [workload, explain, endpoints, migrations, moves] = await Promise.all([
    get(`/v1/workloads/${enc(name)}`),
    get(`/v1/placements/${enc(name)}/explain`).catch(() => null),
    get(`/v1/services/${enc(name)}/endpoints`).catch(() => ({ endpoints: [] })),
    get(`/v1/workloads/${enc(name)}/migrations`),
    get(`/v1/workloads/${enc(name)}/moves`),
  ]);
  const inFlight = migrations.filter((m) => !["done", "aborted", "failed"].includes(m.state));
  const node = h("div", {},
    h("h1", {}, `Workload ${workload.name}`),
    h("p", { class: "hint" }, `${workload.replicas} replica(s) of ${workload.releases.join(", ")}; priority ${workload.priority}${workload.stateful ? ", stateful" : ""}.`),
    h("section", { "aria-labelledby": "wl-placement" }, h("h2", { id: "wl-placement" }, "Placement and why"),
      table("Replicas", [
        { title: "Replica", cell: (p) => p.replica, num: true },
        { title: "Node", cell: (p) => (p.node_id ? deviceLink(p.node_id, p.node) : "unplaced") },
        { title: "Liveness", cell: (p) => badge(p.liveness) },
        { title: "State", cell: (p) => badge(p.state) }, { title: "Health", cell: (p) => badge(p.health) },
        { title: "Decision", cell: (p) => `${p.action || "—"}: ${p.reason}` },
      ], workload.placement)),
    h("section", { "aria-labelledby": "wl-explain" }, h("h2", { id: "wl-explain" }, "Which constraints and scores chose each node"),
      explain ? explanation(explain) : h("p", { class: "hint" }, "No explanation available yet.")),
    h("section", { "aria-labelledby": "wl-endpoints" }, h("h2", { id: "wl-endpoints" }, "Endpoints and traffic weights"),
      table("Endpoints", [
        { title: "Replica", cell: (e) => e.replica, num: true },
        { title: "Node", cell: (e) => deviceLink(e.node_id, e.node) },
        { title: "Role", cell: (e) => e.role }, { title: "Weight", cell: (e) => `${e.weight}%`, num: true },
        { title: "Healthy", cell: (e) => badge(e.healthy ? "healthy" : "unhealthy", e.healthy ? "ok" : "bad") },
        { title: "URL", cell: (e) => h("code", {}, e.url || "—") },
      ], endpoints.endpoints, "no endpoint yet.")),
    h("section", { "aria-labelledby": "wl-migrations" }, h("h2", { id: "wl-migrations" }, "Migrations in flight"),
      table("In flight", [
        { title: "Replica", cell: (m) => m.replica, num: true },
        { title: "From → to", cell: (m) => [deviceLink(m.source, m.source_name), " → ", deviceLink(m.target, m.target_name)] },
        { title: "Trigger", cell: (m) => m.trigger }, { title: "State", cell: (m) => badge(m.state) },
        { title: "Traffic on target", cell: (m) => `${m.weight_pct}%`, num: true }, { title: "Why", cell: (m) => m.reason },
      ], inFlight, "none.")),
    h("section", { "aria-labelledby": "wl-history" }, h("h2", { id: "wl-history" }, "Failover and migration history"),
      h("p", { class: "hint" }, "Every replica move the control plane made (first placements, failovers, rebalances, migration commits), the newest 200 per workload, and every migration."),
      table("Replica moves, newest first", [
        { title: "At", cell: (m) => timeEl(m.at) }, { title: "Replica", cell: (m) => m.replica, num: true },
        { title: "Kind", cell: (m) => badge(m.kind, m.kind === "failover" ? "warn" : undefined) },
        { title: "From → to", cell: (m) => [m.from ? deviceLink(m.from, m.from_name) : "nowhere", " → ", deviceLink(m.to, m.to_name)] },
        { title: "Generation", cell: (m) => m.generation, num: true }, { title: "Why", cell: (m) => m.reason },
      ], moves, "no replica has moved."),
      table("Migrations, newest first", [
        { title: "Created", cell: (m) => timeEl(m.created_at) }, { title: "Replica", cell: (m) => m.replica, num: true },
        { title: "From → to", cell: (m) => [deviceLink(m.source, m.source_name), " → ", deviceLink(m.target, m.target_name)] },
        { title: "Trigger", cell: (m) => m.trigger }, { title: "State", cell: (m) => badge(m.state) },
        { title: "Steps", cell: (m) => m.steps.map((s) => `${s.state} (${s.weight_pct}%)`).join(" → ") },
      ], migrations, "none.")));
  return { title: `Workload ${workload.name}`, node, onFleet: () => {} };
}
