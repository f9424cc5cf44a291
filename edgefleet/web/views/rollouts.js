// Rollouts: the list with a form to start one, and a rollout's live waves, gates, blast
// radius, timeline and after-action report, with the operator's commands.

import { enc, get, post } from "../api.js";
import { badge, deviceLink, facts, h, notice, pct, rolloutLink, table, timeEl, when } from "../dom.js";

const COMMANDS = [
  ["pause", "Pause", "Pause rollout", ["progressing", "soaking", "pending"]],
  ["resume", "Resume", "Resume rollout", ["paused"]],
  ["abort", "Abort", "Abort rollout (devices keep what they run)", ["progressing", "soaking", "pending", "paused"]],
  ["rollback", "Roll back", "Roll back the devices it touched", ["progressing", "soaking", "paused", "failed", "aborted"]],
];

function parseWaves(text) {
  return text.split(",").map((w) => w.trim()).filter(Boolean)
    .map((w) => (/^\d+$/.test(w) ? Number(w) : w));
}

function createForm(ctx, releases) {
  const field = (id, label, input, hint) => h("div", { class: "field" }, h("label", { for: id }, label), input,
    hint ? h("small", { class: "hint", id: `${id}-hint` }, hint) : null);
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "panel", "aria-labelledby": "new-rollout" },
    h("h2", { id: "new-rollout" }, "Start a rollout"),
    h("div", { class: "inline form" },
      field("ro-name", "Name", h("input", { id: "ro-name", name: "name", required: true, pattern: "[a-z0-9][a-z0-9.-]*", maxlength: 64 })),
      field("ro-release", "Release (signed)", h("select", { id: "ro-release", name: "release", required: true },
        releases.filter((r) => r.signed).map((r) => h("option", { value: `${r.name}@${r.version}` }, `${r.name}@${r.version}`)))),
      field("ro-target", "Devices (label selector)", h("input", { id: "ro-target", name: "target", required: true, placeholder: "region=eu,kind=camera" })),
      field("ro-waves", "Waves", h("input", { id: "ro-waves", name: "waves", value: "1, 50%, 100%", required: true })),
      field("ro-soak", "Soak per wave", h("input", { id: "ro-soak", name: "soak", value: "30s", required: true })),
      field("ro-failures", "Max install failures (%)", h("input", { id: "ro-failures", name: "max_install_failure", type: "number", min: 0, max: 100, value: 0 })),
      field("ro-attempts", "Install attempts per device", h("input", { id: "ro-attempts", name: "max_attempts", type: "number", min: 1, max: 10, value: 3 })),
      field("ro-on-failure", "On a failed gate", h("select", { id: "ro-on-failure", name: "on_failure" },
        h("option", { value: "rollback" }, "roll back"), h("option", { value: "pause" }, "pause")))),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Start rollout")), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const f = new FormData(form);
    const manifest = {
      kind: "Rollout", metadata: { name: f.get("name") },
      spec: {
        release: f.get("release"), target: f.get("target"),
        strategy: { waves: parseWaves(f.get("waves")), soak: f.get("soak") },
        gates: { install_failure_rate: { max_percent: Number(f.get("max_install_failure")), min_devices: 1 } },
        retries: { max_attempts: Number(f.get("max_attempts")) },
        on_failure: f.get("on_failure"),
      },
    };
    const answer = await ctx.confirm(`Start rolling out ${manifest.spec.release} to devices matching '${manifest.spec.target}'?`, "Start");
    if (!answer.ok) return;
    try {
      const created = await post("/v1/rollouts", { manifest });
      ctx.announce(`Rollout ${created.rollout.name} started`);
      window.location.hash = `#/rollouts/${enc(created.rollout.id)}`;
    } catch (failure) { error.textContent = failure.message; }
  });
  return form;
}

export async function renderList(ctx) {
  const canWrite = ctx.can("rollouts.write");
  const [rollouts, releases] = await Promise.all([get("/v1/rollouts"), canWrite ? get("/v1/releases") : []]);
  const list = table("Rollouts, newest first", [
    { title: "Rollout", cell: (r) => rolloutLink(r.id, r.name) },
    { title: "Release", cell: (r) => r.release },
    { title: "Devices", cell: (r) => r.target },
    { title: "State", cell: (r) => badge(r.state) },
    { title: "Wave", cell: (r) => `${r.wave + 1} of ${r.waves_total}` },
    { title: "Devices by state", cell: (r) => Object.entries(r.counts || {}).map(([k, v]) => `${v} ${k}`).join(", ") || "—" },
    { title: "Updated", cell: (r) => timeEl(r.updated_at) },
  ], rollouts, "none yet.");
  const node = h("div", {}, h("h1", {}, "Rollouts"), canWrite ? createForm(ctx, releases) : null, h("div", { class: "panel" }, list));
  return { title: "Rollouts", node, onRollout: () => ctx.refresh() };
}

// Device states by the colour of their outcome: any failure or rollback counts as failed.
function outcome(state) {
  if (state === "installed") return "installed";
  if (state.includes("fail") || state.includes("roll")) return "failed";
  return ["assigned", "updating", "installing", "downloading"].includes(state) ? "updating" : "pending";
}

function bar(counts, size) {
  const sums = { installed: 0, updating: 0, failed: 0 };
  for (const [state, n] of Object.entries(counts)) {
    const kind = outcome(state);
    if (kind !== "pending") sums[kind] += n;
  }
  const parts = Object.entries(sums);
  const done = parts.reduce((n, [, v]) => n + v, 0);
  parts.push(["pending", Math.max(0, size - done)]);
  const bar = h("div", { class: "bar", role: "img", "aria-label": parts.map(([k, v]) => `${v} ${k}`).join(", ") });
  for (const [k, v] of parts) {
    if (!v) continue;
    const span = h("span", { class: k });
    span.style.width = `${(100 * v) / Math.max(size, 1)}%`;
    bar.append(span);
  }
  return bar;
}

function gateRows(gate) {
  return table(`Wave ${gate.wave + 1} gates: ${gate.verdict} at ${when(gate.at)}`, [
    { title: "Gate", cell: (r) => r.gate },
    { title: "Verdict", cell: (r) => badge(r.verdict) },
    { title: "Measured", cell: (r) => meter(r), num: false },
    { title: "Threshold", cell: (r) => `≤ ${r.threshold}${r.unit === "%" ? "%" : ` ${r.unit || ""}`}` },
    { title: "Devices", cell: (r) => r.devices, num: true },
    { title: "Samples", cell: (r) => r.samples, num: true },
    { title: "Why", cell: (r) => r.reason },
  ], gate.results);
}

function meter(result) {
  const scale = Math.max(result.threshold * 2, result.measured ?? 0, 1);
  const box = h("div", { class: "gate-meter", role: "img",
    "aria-label": `measured ${result.measured ?? "nothing"} against a threshold of ${result.threshold}` });
  const value = h("span", { class: `value ${result.verdict}` });
  value.style.width = `${Math.min(100, (100 * Math.max(0, result.measured ?? 0)) / scale)}%`;
  const limit = h("span", { class: "limit" });
  limit.style.left = `${Math.min(100, (100 * result.threshold) / scale)}%`;
  box.append(value, limit);
  return [h("span", {}, result.measured == null ? "—" : `${Number(result.measured).toPrecision(3)}${result.unit === "%" ? "%" : ""}`), box];
}

function actions(ctx, rollout) {
  if (!ctx.can("rollouts.write")) return null;
  const usable = COMMANDS.filter(([, , , states]) => states.includes(rollout.state));
  if (!usable.length) return null;
  return h("div", { class: "actions", role: "group", "aria-label": "Rollout commands" }, usable.map(([command, label, question]) =>
    h("button", {
      type: "button", class: command === "resume" ? "" : "danger", "data-command": command,
      onclick: async () => {
        const answer = await ctx.confirm(`${question}: ${rollout.name} (${rollout.release})?`, label);
        if (!answer.ok) return;
        try {
          await post(`/v1/rollouts/${enc(rollout.id)}/${command}`, { note: answer.note });
          ctx.announce(`Rollout ${rollout.name}: ${command} requested`);
          ctx.refresh();
        } catch (failure) { ctx.announce(failure.message); window.alert(failure.message); }
      },
    }, label)));
}

export async function renderRollout(ctx) {
  const [id] = ctx.params;
  const [status, report] = await Promise.all([get(`/v1/rollouts/${enc(id)}`), get(`/v1/rollouts/${enc(id)}/report`)]);
  const byWave = new Map();
  for (const d of status.devices) {
    if (!byWave.has(d.wave)) byWave.set(d.wave, []);
    byWave.get(d.wave).push(d);
  }
  const failedGate = status.gates.find((g) => g.verdict === "fail");
  const waves = h("div", { class: "waves" }, status.waves.map((w) => h("section", {
    class: `wave${w.current ? " current" : ""}`, "aria-labelledby": `wave-${w.index}` },
    h("h3", { id: `wave-${w.index}` }, `Wave ${w.index + 1} (${w.label}): ${w.size} device(s)`, w.current ? " — current" : ""),
    bar(w.counts || {}, w.size),
    h("p", {}, Object.entries(w.counts || {}).map(([k, v]) => `${v} ${k}`).join(", ") || "not started",
      w.gate ? [" · gates ", badge(w.gate.verdict)] : ""),
    h("ul", {}, (byWave.get(w.index) || []).map((d) => h("li", {}, deviceLink(d.device_id, d.name), " ", badge(d.state),
      d.reason ? ` ${d.reason}` : ""))))));
  const rb = report.rollback || { actions: [], devices: [] };
  const node = h("div", {},
    h("h1", {}, `Rollout ${status.name} `, badge(status.state)),
    h("p", { id: "rollout-reason" }, status.reason),
    failedGate ? notice(`Stopped by a failed gate in wave ${failedGate.wave + 1}: ${failedGate.results.filter((r) => r.verdict === "fail").map((r) => r.reason).join("; ")}`, "bad") : null,
    actions(ctx, status),
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "ro-facts" }, h("h2", { id: "ro-facts" }, "What and where"),
        facts([["Release", status.release], ["Devices", status.target], ["On failure", status.on_failure],
          ["Created", [timeEl(status.created_at), ` by ${status.created_by}`]], ["Wave", `${status.wave + 1} of ${status.waves_total}`]])),
      h("section", { class: "panel", "aria-labelledby": "blast" }, h("h2", { id: "blast" }, "Blast radius"),
        facts([["Devices targeted", String(status.devices.length)], ["Devices touched", String(report.touched)],
          ["Share touched", pct((100 * report.touched) / Math.max(1, status.devices.length), 0)],
          ["By state", Object.entries(report.totals || {}).map(([k, v]) => `${v} ${k}`).join(", ") || "—"],
          ["Failed", String(report.failed.length)], ["Skipped", String(report.skipped.length)],
          ["Rolled back", String(rb.devices.length)]]))),
    h("section", { "aria-labelledby": "ro-waves" }, h("h2", { id: "ro-waves" }, "Waves"), waves),
    h("section", { "aria-labelledby": "ro-gates" }, h("h2", { id: "ro-gates" }, "Gates: measured against thresholds"),
      status.gates.length ? status.gates.map(gateRows) : h("p", { class: "hint" }, "No gate evaluated yet.")),
    h("section", { "aria-labelledby": "ro-timeline" }, h("h2", { id: "ro-timeline" }, "Timeline"),
      table("Events", [
        { title: "At", cell: (e) => timeEl(e.at) }, { title: "Event", cell: (e) => e.kind },
        { title: "Device", cell: (e) => (e.device_id ? deviceLink(e.device_id, e.device) : "—") },
        { title: "Actor", cell: (e) => e.actor }, { title: "Why", cell: (e) => e.reason },
      ], report.timeline)),
    h("section", { "aria-labelledby": "ro-report" }, h("h2", { id: "ro-report" }, "After-action report"),
      h("div", { class: "panel" },
        facts([["Outcome", [badge(report.rollout.state), ` ${report.rollout.reason}`]],
          ["Report generated", timeEl(report.generated_at)],
          ["Rollback actions", rb.actions.map((a) => a.kind).join(" → ") || "none"],
          ["Failed devices", report.failed.map((d) => `${d.name || d.device_id}: ${d.reason}`).join("; ") || "none"]]),
        h("p", {}, h("a", { href: `/v1/rollouts/${enc(status.id)}/report?format=markdown` }, "The report as Markdown")))));
  return {
    title: `Rollout ${status.name}`, node,
    onRollout(event) { if (event.id === status.id) ctx.refresh(); },
  };
}
