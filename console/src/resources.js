// Networks, disks, API keys and hosts.
import { useState } from "preact/hooks";
import { all, call, enc, session, when } from "./api.js";
import { ConfirmButton, html, Loading, Problem, useAction, useLoad } from "./ui.js";

function ListState({ list, what }) {
  return html`<${Problem} error=${list.error} />
    ${list.loading && html`<${Loading} what=${what} />`}
    ${list.data && list.data.length === 0 && html`<p class="muted">No ${what} yet.</p>`}`;
}

export function Networks() {
  const list = useLoad(() => all("/v1/networks"), [], 10000);
  const [name, setName] = useState("");
  const action = useAction();
  const create = (event) => {
    event.preventDefault();
    action.run(async () => {
      await call("POST", "/v1/networks", { body: { name: name.trim() } });
      setName("");
      list.reload();
    });
  };
  return html`<section aria-labelledby="networks-title">
    <h2 id="networks-title">Networks</h2>
    <p class="muted">Sandboxes in one network reach each other by name; attach them at create.</p>
    <form class="inline" onSubmit=${create}>
      <label for="network-name">New network</label>
      <input id="network-name" value=${name} onInput=${(e) => setName(e.target.value)} required maxlength="63" />
      <button type="submit" disabled=${action.busy}>Create network</button>
    </form>
    <${Problem} error=${action.error} />
    <${ListState} list=${list} what="networks" />
    ${list.data && list.data.length > 0 && html`<div class="table-wrap"><table>
      <caption class="sr-only">Your networks</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Id</th><th scope="col">Members</th>
        <th scope="col">Created</th><th scope="col">Actions</th></tr></thead>
      <tbody>${list.data.map((n) => html`<tr key=${n.id}>
        <td>${n.name}</td><td><code>${n.id}</code></td><td>${n.member_count}</td><td>${when(n.created_at)}</td>
        <td><${ConfirmButton} label="Delete" confirm=${`Delete ${n.name}`}
          onConfirm=${() => action.run(async () => { await call("DELETE", `/v1/networks/${enc(n.id)}`); list.reload(); })} /></td>
      </tr>`)}</tbody>
    </table></div>`}
  </section>`;
}

export function Disks() {
  const list = useLoad(() => all("/v1/disks"), [], 10000);
  const action = useAction();
  return html`<section aria-labelledby="disks-title">
    <h2 id="disks-title">Disks</h2>
    <p class="muted">S3-compatible buckets mounted into sandboxes. Register one with
      <code>POST /v1/disks</code> (its credentials are sealed and never shown); attach it at create.</p>
    <${Problem} error=${action.error} />
    <${ListState} list=${list} what="disks" />
    ${list.data && list.data.length > 0 && html`<div class="table-wrap"><table>
      <caption class="sr-only">Your disks</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Kind</th><th scope="col">Bucket</th>
        <th scope="col">Endpoint</th><th scope="col">Created</th><th scope="col">Actions</th></tr></thead>
      <tbody>${list.data.map((d) => html`<tr key=${d.id}>
        <td>${d.name}</td><td>${d.kind}</td><td>${d.config.bucket}</td><td>${d.config.endpoint}</td>
        <td>${when(d.created_at)}</td>
        <td><${ConfirmButton} label="Delete" confirm=${`Delete ${d.name}`}
          onConfirm=${() => action.run(async () => { await call("DELETE", `/v1/disks/${enc(d.id)}`); list.reload(); })} /></td>
      </tr>`)}</tbody>
    </table></div>`}
  </section>`;
}

export function Keys({ me }) {
  const current = session.key() || "";
  const list = useLoad(() => call("GET", "/v1/api-keys"), [], 10000);
  const [made, setMade] = useState(null);
  const action = useAction();
  const create = () => action.run(async () => {
    setMade(await call("POST", "/v1/api-keys"));
    list.reload();
  });
  const revoke = (key) => action.run(async () => {
    await call("DELETE", `/v1/api-keys/${enc(key.id)}`);
    list.reload();
  });
  return html`<section aria-labelledby="keys-title">
    <h2 id="keys-title">API keys</h2>
    <p>You are <strong>${me.user_id}</strong>, with the key <code>${current.slice(0, 8)}…</code> in this tab.
      A key is shown once, when it is made; a revoked key is refused from its next request.</p>
    <dl class="facts">
      <div><dt>Running</dt><dd>${me.stats.running}</dd></div><div><dt>Paused</dt><dd>${me.stats.paused}</dd></div>
      <div><dt>Other</dt><dd>${me.stats.other}</dd></div><div><dt>Ever</dt><dd>${me.stats.total}</dd></div>
    </dl>
    <button type="button" onClick=${create} disabled=${action.busy}>Make a new key</button>
    ${made && html`<p role="status" class="secret">Your new key (copy it now; it is not shown again):
      <code data-testid="new-key">${made.key}</code></p>`}
    <${Problem} error=${action.error} />
    <${ListState} list=${list} what="keys" />
    ${list.data && list.data.length > 0 && html`<div class="table-wrap"><table>
      <caption class="sr-only">Your API keys</caption>
      <thead><tr><th scope="col">Prefix</th><th scope="col">Id</th><th scope="col">Created</th>
        <th scope="col">Last used</th><th scope="col">Revoked</th><th scope="col">Actions</th></tr></thead>
      <tbody>${list.data.map((k) => html`<tr key=${k.id}>
        <td><code>${k.prefix}…</code>${current.startsWith(k.prefix) ? " (this tab)" : ""}</td>
        <td><code>${k.id}</code></td><td>${when(k.created_at)}</td><td>${when(k.last_used_at)}</td>
        <td>${k.revoked_at ? when(k.revoked_at) : "–"}</td>
        <td>${!k.revoked_at && html`<${ConfirmButton} label="Revoke" confirm=${`Revoke ${k.prefix}…`}
          onConfirm=${() => revoke(k)} />`}</td>
      </tr>`)}</tbody>
    </table></div>`}
  </section>`;
}

export function Hosts() {
  const list = useLoad(() => all("/v1/hosts"), [], 10000);
  return html`<section aria-labelledby="hosts-title">
    <h2 id="hosts-title">Hosts</h2>
    <${ListState} list=${list} what="hosts" />
    ${list.data && list.data.length > 0 && html`<div class="table-wrap"><table>
      <caption class="sr-only">The hosts of this hutch</caption>
      <thead><tr><th scope="col">Host</th><th scope="col">Status</th><th scope="col">Sandboxes</th>
        <th scope="col">Free memory</th><th scope="col">Runtimes</th><th scope="col">Images</th>
        <th scope="col">Labels</th></tr></thead>
      <tbody>${list.data.map((host) => html`<tr key=${host.id}>
        <td>${host.id}</td><td>${host.status}</td><td>${host.vm_count}</td><td>${host.free_mib} MiB</td>
        <td>${(host.runtimes || []).join(", ")}</td><td>${host.rootfses.join(", ")}</td>
        <td>${Object.entries(host.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–"}</td>
      </tr>`)}</tbody>
    </table></div>`}
  </section>`;
}
