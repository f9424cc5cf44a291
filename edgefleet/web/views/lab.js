// Lab: the control plane stores no rehearsal, so the page shows what really happened in
// the latest rollouts and how to rehearse the next one against a copy of this fleet.

import { get } from "../api.js";
import { badge, h, pct, rolloutLink, table, timeEl } from "../dom.js";

export async function render() {
  const rollouts = (await get("/v1/rollouts")).slice(0, 5);
  const reports = await Promise.all(rollouts.map((r) => get(`/v1/rollouts/${encodeURIComponent(r.id)}/report`).catch(() => null)));
  const rows = rollouts.map((r, i) => ({ rollout: r, report: reports[i] })).filter((x) => x.report);
  const origin = window.location.origin;
  const node = h("div", {}, h("h1", {}, "Lab: rehearsals and what really happened"),
    h("p", { class: "notice" }, "Rehearsal reports are written where they run (", h("code", {}, "edgefleet lab rehearse"),
      ") and are not stored by the control plane; compare one with the real rollout's report below."),
    h("section", { "aria-labelledby": "howto" }, h("h2", { id: "howto" }, "Rehearse the next rollout"),
      h("div", { class: "panel" },
        h("p", {}, "On a copy of this fleet, with the control plane's own decision code on a simulated clock:"),
        h("pre", {}, h("code", {}, `edgefleet lab rehearse --rollout rollout.yaml --fleet-from ${origin} --hours 2 --seed 1 -o rehearsal.md`)),
        h("p", {}, "Or on a modelled fleet, with a bad release to see the blast radius:"),
        h("pre", {}, h("code", {}, "edgefleet lab rehearse --rollout rollout.yaml --profile retail-cameras --devices 10000 --bad-release -o rehearsal.md")))),
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
      ], rows, "no rollout yet.")));
  return { title: "Lab", node };
}
