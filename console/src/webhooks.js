// Webhooks: the list, a form to add one (its secret shown once), delete, and each one's
// delivery log (newest first).
import { useState } from "preact/hooks";
import { all, call, enc, get, when } from "./api.js";
import { ConfirmButton, Field, html, Loading, Problem, useAction, useLoad } from "./ui.js";

const TYPES = [
  "sandbox.created", "sandbox.forked", "sandbox.running", "sandbox.paused", "sandbox.resumed",
  "sandbox.error", "sandbox.destroyed", "template.ready", "template.failed",
  "deployment.ready", "deployment.failed",
];

function Deliveries({ hook }) {
  const list = useLoad(async () => (await get(`/v1/webhooks/${enc(hook.id)}/deliveries?limit=50`)).data,
    [hook.id], 5000);
  return html`<div>
    <${Problem} error=${list.error} />
    ${list.loading && html`<${Loading} what="deliveries" />`}
    ${list.data && list.data.length === 0 && html`<p class="muted">No deliveries yet.</p>`}
    ${list.data && list.data.length > 0 && html`<div class="table-wrap"><table>
      <caption class="sr-only">Deliveries to ${hook.url}</caption>
      <thead><tr><th scope="col">Event</th><th scope="col">State</th><th scope="col">Attempts</th>
        <th scope="col">Last answer</th><th scope="col">Next try</th><th scope="col">Created</th></tr></thead>
      <tbody>${list.data.map((d) => html`<tr key=${d.id}>
        <td>${d.event_type}</td><td>${d.state}</td><td>${d.attempts}</td>
        <td>${d.last_status ?? d.last_error ?? "–"}</td><td>${when(d.next_attempt_at)}</td>
        <td>${when(d.created_at)}</td></tr>`)}</tbody>
    </table></div>`}
  </div>`;
}

export function Webhooks() {
  const list = useLoad(() => all("/v1/webhooks"), []);
  const [url, setUrl] = useState("");
  const [description, setDescription] = useState("");
  const [types, setTypes] = useState([]);
  const [made, setMade] = useState(null);
  const [open, setOpen] = useState(null);
  const action = useAction();
  const toggle = (type) => setTypes(types.includes(type) ? types.filter((t) => t !== type) : [...types, type]);
  const create = (event) => {
    event.preventDefault();
    action.run(async () => {
      const body = { url: url.trim(), events: types.length ? types : ["*"], description };
      setMade(await call("POST", "/v1/webhooks", { body }));
      setUrl("");
      setDescription("");
      setTypes([]);
      list.reload();
    });
  };
  return html`<section aria-labelledby="webhooks-title">
    <h2 id="webhooks-title">Webhooks</h2>
    <form class="card" onSubmit=${create} aria-labelledby="webhook-new">
      <h3 id="webhook-new">New webhook</h3>
      <div class="grid">
        <${Field} label="URL" id="webhook-url">
          <input id="webhook-url" type="url" value=${url} onInput=${(e) => setUrl(e.target.value)} required />
        </${Field}>
        <${Field} label="Description" id="webhook-description">
          <input id="webhook-description" value=${description} onInput=${(e) => setDescription(e.target.value)} maxlength="256" />
        </${Field}>
        <fieldset class="field"><legend>Events (none ticked: all)</legend>
          ${TYPES.map((t) => html`<label class="check"><input type="checkbox" checked=${types.includes(t)}
            onChange=${() => toggle(t)} /> ${t}</label>`)}
        </fieldset>
      </div>
      <button type="submit" disabled=${action.busy}>Add webhook</button>
      <${Problem} error=${action.error} />
    </form>
    ${made && html`<p class="card" role="status">Added. Its signing secret, shown this once:
      <code data-testid="webhook-secret">${made.secret}</code></p>`}
    <${Problem} error=${list.error} />
    ${list.data && list.data.length === 0 && html`<p class="muted">No webhooks yet.</p>`}
    ${list.data && list.data.length > 0 && html`<ul class="history">${list.data.map((hook) => html`<li class="card" key=${hook.id}>
      <div class="title-row"><strong>${hook.url}</strong>
        <span class="muted">${hook.events.join(", ")}${hook.description ? ` · ${hook.description}` : ""}</span>
        <button type="button" aria-expanded=${open === hook.id}
          onClick=${() => setOpen(open === hook.id ? null : hook.id)}>Deliveries</button>
        <${ConfirmButton} label="Delete" confirm=${`Delete the webhook to ${hook.url}`}
          onConfirm=${() => action.run(async () => { await call("DELETE", `/v1/webhooks/${enc(hook.id)}`); list.reload(); })} />
      </div>
      ${open === hook.id && html`<${Deliveries} hook=${hook} />`}
    </li>`)}</ul>`}
  </section>`;
}
