// Audit: the hash-chained log, newest first, with the chain's verification.

import { get, q } from "../api.js";
import { badge, facts, h, link, notice, table, timeEl } from "../dom.js";

const PAGE = 100;

export async function render(ctx) {
  const before = Number(ctx.query.get("before") || 0) || 0;
  const records = before
    ? await get(`/v1/audit${q({ after: Math.max(0, before - PAGE - 1), limit: Math.min(PAGE, before - 1) })}`)
    : await get(`/v1/audit${q({ tail: PAGE })}`);
  const verification = h("div", { class: "panel", "aria-live": "polite" }, h("p", {}, "Verifying the hash chain…"));
  const rows = [...records].reverse();
  const oldest = records.length ? records[0].seq : 0;
  const node = h("div", {}, h("h1", {}, "Audit log"),
    h("section", { "aria-labelledby": "chain" }, h("h2", { id: "chain" }, "Hash chain"), verification),
    h("section", { "aria-labelledby": "records" }, h("h2", { id: "records" }, "Records, newest first"),
      table(`Records ${oldest}–${records.length ? records[records.length - 1].seq : 0}`, [
        { title: "Seq", cell: (r) => r.seq, num: true }, { title: "At", cell: (r) => timeEl(r.at) },
        { title: "Actor", cell: (r) => r.actor }, { title: "Action", cell: (r) => r.action },
        { title: "Target", cell: (r) => r.target },
        { title: "Details", cell: (r) => h("code", {}, JSON.stringify(r.details)) },
        { title: "Hash", cell: (r) => h("code", { title: r.hash }, r.hash.slice(0, 12), "…") },
      ], rows, "the log is empty."),
      h("nav", { class: "pager", "aria-label": "Pages" },
        oldest > 1 ? link(`#/audit?before=${oldest}`, "Older records") : null,
        before ? link("#/audit", "Newest records") : null)));
  get("/v1/dashboard/audit/verification").then((v) => {
    verification.replaceChildren(
      v.ok ? notice(`Verified: all ${v.records} records link into one unbroken chain.`, "ok")
        : notice(`Broken at record ${v.broken_seq}: ${v.problem}`, "bad"),
      facts([["Status", badge(v.ok ? "verified" : "broken")], ["Head", `record ${v.head_seq}`],
        ["Head hash (write it down as an anchor)", h("code", {}, v.head_hash)]]),
      h("p", { class: "hint" }, "This control plane checked its own log. To check it without trusting the server, run ",
        h("code", {}, `edgefleet audit verify --anchor ${v.head_seq}:${v.head_hash}`), " on your machine later."));
  }).catch((failure) => verification.replaceChildren(notice(`Verification unavailable: ${failure.message}`, "bad")));
  return { title: "Audit", node };
}
