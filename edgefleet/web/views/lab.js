// Lab: rehearsals stored with `edgefleet lab rehearse --save`, each next to the real rollout
// of the same name when one ran (predicted vs real outcome, blast radius, time to each gate),
// the latest rollouts' reports, and how to rehearse the next one.

import { enc, get } from "../api.js";
import { badge, h, pct, rolloutLink, table, timeEl } from "../dom.js";

const SHOWN = 5; // rehearsals compared in full; the list below names the newest 50
const ENDED = ["succeeded", "failed", "rolled-back", "aborted"];

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function since(startIso, iso) {
  return startIso && iso ? (Date.parse(iso) - Date.parse(startIso)) / 1000 : null;
}

// One row per measure both reports carry: [measure, predicted, real].
function comparison(lab, real) {
  const started = real?.rollout.started_at;
  const realTargeted = real ? real.waves.reduce((n, w) => n + w.size, 0) : 0;
  const blast = lab.blast_radius;
  const failedPredicted = (lab.outcome.device_states.failed || 0) + (lab.outcome.device_states["rollback-failed"] || 0);
  const rows = [
    ["Outcome", [badge(lab.outcome.state), " ", lab.outcome.reason],
      real ? [badge(real.rollout.state), " ", real.rollout.reason || ""] : "—"],
    ["Finished after", duration(lab.outcome.finished_after_s),
      real && ENDED.includes(real.rollout.state) ? duration(since(started, real.rollout.updated_at)) : "—"],
    ["Blast radius (devices given the release)",
      `${blast.devices_assigned} of ${blast.devices_targeted} (${pct(blast.share_of_target_percent, 0)})`,
      real ? `${real.touched} of ${realTargeted} (${pct((100 * real.touched) / Math.max(1, realTargeted), 0)})` : "—"],
    ["Failed devices", failedPredicted, real ? real.failed.length : "—"],
  ];
  const waves = Math.max(lab.waves.length, real ? real.waves.length : 0);
  for (let i = 0; i < waves; i += 1) {
    const predicted = lab.waves[i];
    const gates = real ? real.gates.filter((g) => g.wave === i) : [];
    const label = predicted?.label || real?.waves[i]?.label || "";
    const lastGate = predicted?.gates[predicted.gates.length - 1];
    rows.push([`Wave ${i + 1}${label ? ` (${label})` : ""}: last gate after`,
      lastGate ? `${duration(lastGate.at_s)} (${lastGate.verdict})` : "—",
      gates.length ? `${duration(since(started, gates[gates.length - 1].at))} (${gates[gates.length - 1].verdict})` : "—"]);
  }
  return rows;
}

function sideBySide(saved, real) {
  const lab = saved.report;
  const caption = real
    ? `Rehearsal ${saved.id} next to rollout ${real.rollout.id}`
    : `Rehearsal ${saved.id}; no rollout named ${saved.rollout} has run yet`;
  return h("article", { class: "panel", "aria-label": `Rehearsal ${saved.id}` },
    h("h3", {}, `${saved.rollout}: ${saved.release}`),
    h("p", { class: "hint" }, "Rehearsed by ", saved.created_by, " ", timeEl(saved.created_at),
      ` on ${lab.rehearsal.devices} devices (${lab.rehearsal.source}), ${lab.rehearsal.hours} simulated h, seed ${lab.rehearsal.seed}`,
      lab.rehearsal.bad_release ? ", release treated as bad" : "", real ? ["; the rollout: ", rolloutLink(real.rollout.id, real.rollout.name)] : "", "."),
    table(caption, [
      { title: "Measure", cell: (r) => r[0] },
      { title: "Predicted (rehearsal)", cell: (r) => r[1] },
      { title: "Real (rollout)", cell: (r) => r[2] },
    ], comparison(lab, real)));
}

export async function render() {
  const [rehearsals, rollouts] = await Promise.all([get("/v1/rehearsals"), get("/v1/rollouts")]);
  const compared = await Promise.all(rehearsals.slice(0, SHOWN).map(async (r) => {
    const real = rollouts.find((x) => x.name === r.rollout); // newest first
    const [saved, report] = await Promise.all([
      get(`/v1/rehearsals/${enc(r.id)}`),
      real ? get(`/v1/rollouts/${enc(real.id)}/report`).catch(() => null) : null,
    ]);
    return sideBySide(saved, report);
  }));
  const latest = rollouts.slice(0, 5);
  const reports = await Promise.all(latest.map((r) => get(`/v1/rollouts/${enc(r.id)}/report`).catch(() => null)));
  const rows = latest.map((r, i) => ({ rollout: r, report: reports[i] })).filter((x) => x.report);
  const origin = window.location.origin;
  const node = h("div", {}, h("h1", {}, "Lab: rehearsals and what really happened"),
    h("section", { "aria-labelledby": "compared" }, h("h2", { id: "compared" }, "Rehearsals next to the real rollouts"),
      compared.length ? compared : h("p", { class: "hint" }, "No rehearsal stored yet: rehearse with --save (below).")),
    h("section", { "aria-labelledby": "stored" }, h("h2", { id: "stored" }, "Stored rehearsals"),
      table("Rehearsals, newest first", [
        { title: "Rehearsal", cell: (r) => r.id }, { title: "Rollout", cell: (r) => r.rollout },
        { title: "Release", cell: (r) => r.release }, { title: "Predicted outcome", cell: (r) => badge(r.outcome) },
        { title: "By", cell: (r) => r.created_by }, { title: "At", cell: (r) => timeEl(r.created_at) },
      ], rehearsals, "none.")),
    h("section", { "aria-labelledby": "real" }, h("h2", { id: "real" }, "What really happened (latest rollouts)"),
      table("Rollout reports", [
        { title: "Rollout", cell: (x) => rolloutLink(x.rollout.id, x.rollout.name) },
        { title: "Release", cell: (x) => x.rollout.release },
        { title: "Outcome", cell: (x) => badge(x.report.rollout.state) },
        { title: "Waves run", cell: (x) => `${x.report.gates.length} of ${x.report.waves.length}`, num: true },
        { title: "Devices touched", cell: (x) => x.report.touched, num: true },
        { title: "Failed", cell: (x) => x.report.failed.length, num: true },
        { title: "Touched of targeted", cell: (x) => pct((100 * x.report.touched) / Math.max(1, x.report.waves.reduce((n, w) => n + w.size, 0)), 0), num: true },
        { title: "Ended", cell: (x) => timeEl(x.rollout.updated_at) },
      ], rows, "no rollout yet.")),
    h("section", { "aria-labelledby": "howto" }, h("h2", { id: "howto" }, "Rehearse the next rollout"),
      h("div", { class: "panel" },
        h("p", {}, "On a copy of this fleet, with the control plane's own decision code on a simulated clock, stored here next to the rollout of the same name:"),
        h("pre", {}, h("code", {}, `edgefleet lab rehearse --rollout rollout.yaml --fleet-from ${origin} --hours 2 --seed 1 --save`)),
        h("p", {}, "Or on a modelled fleet, with a bad release to see the blast radius:"),
        h("pre", {}, h("code", {}, "edgefleet lab rehearse --rollout rollout.yaml --profile retail-cameras --devices 10000 --bad-release --save")))));
  return { title: "Lab", node };
}
