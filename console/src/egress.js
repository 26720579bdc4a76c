// Egress rules (GET/PUT …/egress) and the bandwidth quota and use (…/bandwidth).
import { useEffect, useState } from "preact/hooks";
import { bytes, call, enc, get } from "./api.js";
import { html, Loading, Problem, useAction, useLoad } from "./ui.js";

export function EgressTab({ sandbox }) {
  const base = `/v1/sandboxes/${enc(sandbox.id)}`;
  const rules = useLoad(() => get(`${base}/egress`), [sandbox.id]);
  const bandwidth = useLoad(() => get(`${base}/bandwidth`), [sandbox.id], 5000);
  const [text, setText] = useState("");
  const [saved, setSaved] = useState("");
  const action = useAction();
  useEffect(() => {
    if (rules.data) setText((rules.data.egress || []).join("\n"));
  }, [rules.data]);
  const save = (event) => {
    event.preventDefault();
    action.run(async () => {
      const egress = text.split("\n").map((r) => r.trim()).filter(Boolean);
      const now = await call("PUT", `${base}/egress`, { body: { egress } });
      setText(now.egress.join("\n"));
      setSaved(`Saved ${now.egress.length} rule(s).`);
    });
  };
  const b = bandwidth.data;
  return html`<div class="two">
    <form class="card" onSubmit=${save}>
      <h3>Egress rules</h3>
      ${rules.loading && html`<${Loading} what="the rules" />`}
      <label for="egress-rules">Rules, one a line</label>
      <textarea id="egress-rules" rows="8" value=${text} onInput=${(e) => setText(e.target.value)}
        aria-describedby="egress-help"></textarea>
      <small id="egress-help" class="muted">A domain (example.com, *.example.com), an address or
        CIDR, with :port; "*" is open; none: the server's default. Applied live.</small>
      <button type="submit" disabled=${action.busy || sandbox.status === "destroyed"}>Save rules</button>
      <p class="muted" aria-live="polite">${saved}</p>
      <${Problem} error=${action.error || rules.error} />
    </form>
    <section class="card" aria-labelledby="bw-title">
      <h3 id="bw-title">Bandwidth</h3>
      <${Problem} error=${bandwidth.error} />
      ${b && html`<dl class="facts">
        <div><dt>Quota</dt><dd>${b.quota_bytes < 0 ? "unmetered" : bytes(b.quota_bytes)}</dd></div>
        <div><dt>Used (out)</dt><dd>${bytes(b.used_bytes)}</dd></div>
        <div><dt>In</dt><dd>${bytes(b.ingress_bytes)}</dd></div>
        <div><dt>Remaining</dt><dd>${b.remaining_bytes < 0 ? "–" : bytes(b.remaining_bytes)}</dd></div>
        <div><dt>Capped</dt><dd>${b.capped ? "yes: out of quota" : "no"}</dd></div>
      </dl>`}
    </section>
  </div>`;
}
