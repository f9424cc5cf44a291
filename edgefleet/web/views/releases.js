// Releases and artifacts: signatures and trust, compatibility requirements, delta savings.

import { enc, get } from "../api.js";
import { badge, bytes, facts, h, pct, table, timeEl } from "../dom.js";

function artifactNames(releases) {
  const names = new Set();
  for (const r of releases) for (const a of r.artifacts) names.add(a.split("@")[0]);
  return [...names].sort();
}

export async function render() {
  const [trust, releases] = await Promise.all([get("/v1/trust"), get("/v1/releases")]);
  const shown = releases.slice(-20).reverse();
  const details = await Promise.all(shown.map((r) => get(`/v1/releases/${enc(r.name)}/${enc(r.version)}`).catch(() => r)));
  const names = artifactNames(shown);
  const deltas = await Promise.all(names.map((n) => get(`/v1/artifacts/${enc(n)}/deltas`).then((d) => [n, d]).catch(() => [n, []])));
  const trustPanel = h("section", { class: "panel", "aria-labelledby": "trust" }, h("h2", { id: "trust" }, "Root of trust (TUF)"),
    trust.initialized ? facts([
      ["Status", badge("initialized", "ok")], ["Root version", String(trust.root_version)],
      ["Root expires", timeEl(trust.root_expires)], ["Targets version", String(trust.targets_version)],
      ["Targets expire", timeEl(trust.targets_expires)],
      ["Signing thresholds", Object.entries(trust.roles).map(([role, r]) => `${role} ${r.threshold} of ${r.keyids.length}`).join(", ")],
    ]) : h("p", { class: "notice bad" }, "No root of trust yet: releases cannot be signed (edgefleet trust init)."));
  const releaseTables = details.map((r) => h("section", { class: "panel", "aria-labelledby": `rel-${r.name}-${r.version}` },
    h("h3", { id: `rel-${r.name}-${r.version}` }, `${r.name}@${r.version} `, badge(r.signed ? "signed" : "unsigned")),
    h("p", { class: "hint" }, r.signed ? `Signed in targets metadata version ${r.targets_version}; devices verify it with the fleet's root.`
      : "Not signed: no device will install it.", " Created ", timeEl(r.created_at), ` by ${r.created_by}.`),
    table("Files", [
      { title: "Artifact", cell: (f) => `${f.name}@${f.version}` }, { title: "Kind", cell: (f) => f.kind },
      { title: "Size", cell: (f) => bytes(f.size_bytes), num: true },
      { title: "Requires (compatibility)", cell: (f) => f.requires.join(", ") || "nothing" },
      { title: "SHA-256", cell: (f) => h("code", {}, f.sha256.slice(0, 16), "…") },
    ], r.files || [])));
  const deltaTables = deltas.map(([name, pairs]) => table(`Delta savings for ${name}`, [
    { title: "From", cell: (d) => d.from_version }, { title: "To", cell: (d) => d.to_version },
    { title: "State", cell: (d) => badge(d.state, d.state === "ready" ? "ok" : "muted") },
    { title: "Delta", cell: (d) => bytes(d.delta_size), num: true }, { title: "Full", cell: (d) => bytes(d.target_size), num: true },
    { title: "Saved", cell: (d) => (d.ratio == null ? "—" : pct(100 * (1 - d.ratio), 0)), num: true },
  ], pairs, "no version pairs yet."));
  const node = h("div", {}, h("h1", {}, "Releases and artifacts"), trustPanel,
    h("section", { "aria-labelledby": "rels" }, h("h2", { id: "rels" }, `Releases (newest ${shown.length} of ${releases.length})`),
      h("div", { class: "grid" }, releaseTables)),
    h("section", { "aria-labelledby": "deltas" }, h("h2", { id: "deltas" }, "Delta updates per version pair"),
      h("p", { class: "hint" }, "A delta is offered when it is at most 80% of the full file."),
      h("div", { class: "panel" }, deltaTables)));
  return { title: "Releases", node };
}
