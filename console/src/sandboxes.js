// The sandboxes page: the list (live: refreshed on every lifecycle event), the create
// form, and pause / resume / fork / delete.
import { useEffect, useState } from "preact/hooks";
import { all, bytes, call, enc, get, ndjson, when } from "./api.js";
import { LineChart } from "./chart.js";
import { ConfirmButton, Field, go, html, Loading, Problem, Status, useAction, useLoad } from "./ui.js";

/** Calls `onEvent` for each lifecycle event as it happens (the NDJSON follow stream). */
export function useEvents(onEvent, query = "") {
  useEffect(() => {
    const stop = new AbortController();
    let retry = null;
    const follow = async () => {
      try {
        await ndjson(`/v1/events?follow=true&since=${enc(new Date().toISOString())}${query}`,
          (event) => event.type !== "heartbeat" && onEvent(event), stop.signal);
      } catch (e) {
        if (e.name === "AbortError") return;
      }
      if (!stop.signal.aborted) retry = setTimeout(follow, 3000);
    };
    follow();
    return () => {
      stop.abort();
      clearTimeout(retry);
    };
  }, [query]);
}

export function SandboxActions({ sandbox, onChanged, onDeleted }) {
  const action = useAction();
  const base = `/v1/sandboxes/${enc(sandbox.id)}`;
  const act = (fn) => action.run(async () => { await fn(); onChanged?.(); });
  const running = sandbox.status === "running";
  const paused = sandbox.status === "paused";
  const label = sandbox.name || sandbox.id;
  return html`<span class="actions">
    ${running && html`<button type="button" disabled=${action.busy} aria-label=${`Pause ${label}`}
      onClick=${() => act(() => call("POST", `${base}/pause`))}>Pause</button>`}
    ${paused && html`<button type="button" disabled=${action.busy} aria-label=${`Resume ${label}`}
      onClick=${() => act(() => call("POST", `${base}/resume`))}>Resume</button>`}
    ${paused && html`<button type="button" disabled=${action.busy} aria-label=${`Fork ${label}`}
      onClick=${() => action.run(async () => {
        const child = await call("POST", `${base}/fork`, { body: {} });
        go("sandboxes", child.id);
      })}>Fork</button>`}
    ${sandbox.status !== "destroyed" && html`<${ConfirmButton} label="Delete" confirm=${`Delete ${label}`}
      disabled=${action.busy}
      onConfirm=${() => action.run(async () => {
        await call("DELETE", base);
        (onDeleted || onChanged)?.();
      })} />`}
    <${Problem} error=${action.error} />
  </span>`;
}

function CreateForm({ onCreated }) {
  const choices = useLoad(async () => {
    const [shapes, rootfs, templates, networks, disks] = await Promise.all([
      all("/v1/shapes"), get("/v1/rootfs"), all("/v1/templates"), all("/v1/networks"),
      all("/v1/disks"),
    ]);
    return { shapes, rootfs, templates: templates.filter((t) => t.status === "ready"), networks, disks };
  }, []);
  const [form, setForm] = useState({ name: "", shape: "", rootfs: "", runtime: "", egress: "",
    networks: [], disk: "", mount: "/mnt/disk" });
  const action = useAction();
  const set = (field) => (e) => setForm({ ...form, [field]: e.target.value });
  if (choices.error) return html`<${Problem} error=${choices.error} />`;
  if (!choices.data) return html`<${Loading} what="the create form" />`;
  const { shapes, rootfs, templates, networks, disks } = choices.data;
  const shape = form.shape || shapes[0]?.id;
  const toggleNetwork = (id) => setForm({ ...form, networks: form.networks.includes(id)
    ? form.networks.filter((n) => n !== id) : [...form.networks, id] });
  const submit = (event) => {
    event.preventDefault();
    action.run(async () => {
      const body = { shape };
      if (form.name.trim()) body.name = form.name.trim();
      if (form.rootfs) body.rootfs = form.rootfs;
      if (form.runtime) body.runtime = form.runtime;
      const rules = form.egress.split("\n").map((r) => r.trim()).filter(Boolean);
      if (rules.length) body.egress = rules;
      if (form.networks.length) body.networks = form.networks.map((id) => ({ id }));
      if (form.disk) body.disks = [{ disk_id: form.disk, mount_path: form.mount }];
      const made = await call("POST", "/v1/sandboxes", { body });
      onCreated(made);
    });
  };
  return html`<form class="card create" onSubmit=${submit} aria-labelledby="create-title">
    <h3 id="create-title">New sandbox</h3>
    <div class="grid">
      <${Field} label="Name" id="create-name" hint="Optional; also the hostname.">
        <input id="create-name" value=${form.name} onInput=${set("name")} maxlength="63"
          aria-describedby="create-name-hint" />
      </${Field}>
      <${Field} label="Shape" id="create-shape">
        <select id="create-shape" value=${shape} onChange=${set("shape")}>
          ${shapes.map((s) => html`<option value=${s.id}>${s.id} (${s.vcpu} vCPU, ${s.mem_mib} MiB)</option>`)}
        </select>
      </${Field}>
      <${Field} label="Image or template" id="create-rootfs">
        <select id="create-rootfs" value=${form.rootfs} onChange=${set("rootfs")}>
          <option value="">${rootfs.default} (default)</option>
          <optgroup label="Images">
            ${rootfs.rootfs.map((r) => html`<option value=${r}>${r}</option>`)}
          </optgroup>
          ${templates.length > 0 && html`<optgroup label="Your templates">
            ${templates.map((t) => html`<option value=${t.id}>${t.name} v${t.version}</option>`)}
          </optgroup>`}
        </select>
      </${Field}>
      <${Field} label="Runtime" id="create-runtime">
        <select id="create-runtime" value=${form.runtime} onChange=${set("runtime")}>
          <option value="">default</option><option value="runc">runc</option>
          <option value="gvisor">gvisor</option>
        </select>
      </${Field}>
      <${Field} label="Egress rules" id="create-egress" hint="One a line (e.g. example.com, 198.51.100.0/24:443); empty: the default.">
        <textarea id="create-egress" rows="3" value=${form.egress} onInput=${set("egress")}
          aria-describedby="create-egress-hint"></textarea>
      </${Field}>
      <fieldset class="field">
        <legend>Networks</legend>
        ${networks.length === 0 && html`<small class="muted">None yet (see Networks).</small>`}
        ${networks.map((n) => html`<label class="check"><input type="checkbox"
          checked=${form.networks.includes(n.id)} onChange=${() => toggleNetwork(n.id)} /> ${n.name}</label>`)}
      </fieldset>
      <${Field} label="Disk" id="create-disk">
        <select id="create-disk" value=${form.disk} onChange=${set("disk")}>
          <option value="">none</option>
          ${disks.map((d) => html`<option value=${d.id}>${d.name} (${d.kind})</option>`)}
        </select>
      </${Field}>
      ${form.disk && html`<${Field} label="Mount path" id="create-mount">
        <input id="create-mount" value=${form.mount} onInput=${set("mount")} required />
      </${Field}>`}
    </div>
    <button type="submit" disabled=${action.busy}>${action.busy ? "Creating…" : "Create sandbox"}</button>
    <${Problem} error=${action.error} />
  </form>`;
}

/** The caller's totals over the last 15 minutes (GET /v1/metrics/timeseries). */
function Totals() {
  const series = useLoad(async () => {
    const since = new Date(Date.now() - 15 * 60 * 1000).toISOString();
    return get(`/v1/metrics/timeseries?since=${enc(since)}`);
  }, [], 5000);
  if (!series.data) return html`<${Problem} error=${series.error} />`;
  const samples = series.data.samples;
  const times = samples.map((s) => new Date(s.timestamp));
  const pct = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(0)} %`);
  return html`<details class="card" open=${samples.length > 0}>
    <summary>Your usage, the last 15 minutes</summary>
    <div class="charts">
      <${LineChart} title="CPU (100 % = one vCPU)" format=${pct} times=${times}
        series=${[{ label: "used", className: "a", values: samples.map((s) => s.cpu_used_pct) }]} />
      <${LineChart} title="Memory" format=${bytes} times=${times}
        series=${[{ label: "used", className: "a", values: samples.map((s) => s.mem_used_bytes) }]} />
      <${LineChart} title="Running sandboxes" format=${(v) => (v ?? "–").toString()} times=${times}
        series=${[{ label: "running", className: "b", values: samples.map((s) => s.sandboxes) }]} />
    </div>
  </details>`;
}

export function SandboxList() {
  const list = useLoad(() => all("/v1/sandboxes"), [], 10000);
  const [creating, setCreating] = useState(false);
  useEvents(() => list.reload());
  return html`<section aria-labelledby="sandboxes-title">
    <div class="title-row">
      <h2 id="sandboxes-title">Sandboxes</h2>
      <button type="button" aria-expanded=${creating} onClick=${() => setCreating(!creating)}>
        ${creating ? "Close the form" : "New sandbox"}</button>
    </div>
    ${creating && html`<${CreateForm} onCreated=${(made) => { setCreating(false); go("sandboxes", made.id); }} />`}
    <${Problem} error=${list.error} />
    ${list.loading && !list.data ? html`<${Loading} what="sandboxes" />` : null}
    ${list.data && list.data.length === 0 && html`<p class="muted">No sandboxes yet.</p>`}
    ${list.data && list.data.length > 0 && html`<div class="table-wrap"><table>
      <caption class="sr-only">Your sandboxes</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Status</th><th scope="col">Shape</th>
        <th scope="col">Image</th><th scope="col">Created</th><th scope="col">Actions</th></tr></thead>
      <tbody>${list.data.map((s) => html`<tr key=${s.id} data-sandbox=${s.id}>
        <td><a href=${`#/sandboxes/${enc(s.id)}`}>${s.name || s.id}</a><br /><small class="muted">${s.id}</small></td>
        <td><${Status} value=${s.status} /></td>
        <td>${s.shape}</td><td>${s.rootfs}</td><td>${when(s.created_at)}</td>
        <td><${SandboxActions} sandbox=${s} onChanged=${list.reload} /></td>
      </tr>`)}</tbody>
    </table></div>`}
    <${Totals} />
  </section>`;
}
