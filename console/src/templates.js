// Templates: the list, a build form (name + Dockerfile), and one template's page with
// its build log followed live (NDJSON …/logs?follow=true until the final frame).
import { useEffect, useRef, useState } from "preact/hooks";
import { all, bytes, call, enc, get, ndjson, when } from "./api.js";
import { ConfirmButton, Field, go, html, Loading, Problem, Status, useAction, useLoad } from "./ui.js";

const EXAMPLE = "FROM devbox:1\nRUN echo hello from the build > /hello.txt\n";

function BuildForm() {
  const [name, setName] = useState("");
  const [dockerfile, setDockerfile] = useState(EXAMPLE);
  const action = useAction();
  const submit = (event) => {
    event.preventDefault();
    action.run(async () => {
      const made = await call("POST", "/v1/templates", { body: { name: name.trim(), dockerfile } });
      go("templates", made.id);
    });
  };
  return html`<form class="card" onSubmit=${submit} aria-labelledby="build-title">
    <h3 id="build-title">Build a template</h3>
    <${Field} label="Name" id="template-name">
      <input id="template-name" value=${name} onInput=${(e) => setName(e.target.value)} required maxlength="63" />
    </${Field}>
    <${Field} label="Dockerfile" id="template-dockerfile">
      <textarea id="template-dockerfile" rows="6" class="code" value=${dockerfile}
        onInput=${(e) => setDockerfile(e.target.value)} required></textarea>
    </${Field}>
    <button type="submit" disabled=${action.busy}>${action.busy ? "Submitting…" : "Build"}</button>
    <${Problem} error=${action.error} />
  </form>`;
}

export function Templates() {
  const list = useLoad(() => all("/v1/templates"), [], 5000);
  return html`<section aria-labelledby="templates-title">
    <h2 id="templates-title">Templates</h2>
    <${BuildForm} />
    <${Problem} error=${list.error} />
    ${list.loading && html`<${Loading} what="templates" />`}
    ${list.data && list.data.length === 0 && html`<p class="muted">No templates yet.</p>`}
    ${list.data && list.data.length > 0 && html`<div class="table-wrap"><table>
      <caption class="sr-only">Your templates</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Version</th><th scope="col">Status</th>
        <th scope="col">From</th><th scope="col">Size</th><th scope="col">Created</th></tr></thead>
      <tbody>${list.data.map((t) => html`<tr key=${t.id}>
        <td><a href=${`#/templates/${enc(t.id)}`}>${t.name}</a></td><td>${t.version}</td>
        <td><${Status} value=${t.status} /></td><td>${t.base}</td>
        <td>${t.ext4_size_bytes ? bytes(t.ext4_size_bytes) : "–"}</td><td>${when(t.created_at)}</td>
      </tr>`)}</tbody>
    </table></div>`}
  </section>`;
}

function BuildLog({ template, onFinal }) {
  const [lines, setLines] = useState([]);
  const [final, setFinal] = useState(null);
  const [error, setError] = useState(null);
  const end = useRef(null);
  useEffect(() => {
    const stop = new AbortController();
    const got = [];
    ndjson(`/v1/templates/${enc(template.id)}/logs?follow=true`, (frame) => {
      if (frame.final) {
        setFinal(frame.status);
        onFinal();
      } else if (frame.line !== undefined) {
        got.push(frame);
        setLines([...got]);
      }
    }, stop.signal).catch((e) => e.name !== "AbortError" && setError(e));
    return () => stop.abort();
  }, [template.id]);
  useEffect(() => end.current?.scrollIntoView({ block: "nearest" }), [lines.length]);
  return html`<section aria-labelledby="log-title">
    <h3 id="log-title">Build log ${final
      ? html`<span data-testid="build-final">(finished: ${final})</span>`
      : html`<span class="muted">(live)</span>`}</h3>
    <${Problem} error=${error} />
    <pre class="log" role="log" aria-label="Build log" data-testid="build-log">${lines.map((l) =>
      html`<span class=${`level-${l.level}`}>${`${l.line}\n`}</span>`)}<span ref=${end}></span></pre>
  </section>`;
}

export function TemplatePage({ id }) {
  const found = useLoad(() => get(`/v1/templates/${enc(id)}?include=dockerfile`), [id]);
  const action = useAction();
  if (found.error && found.error.status === 404) {
    return html`<section><h2>Template not found</h2><p role="alert">No template <code>${id}</code> of yours.</p>
      <p><a href="#/templates">Back to templates</a></p></section>`;
  }
  if (!found.data) return found.error ? html`<${Problem} error=${found.error} />` : html`<${Loading} what="the template" />`;
  const t = found.data;
  const building = t.status === "pending" || t.status === "building";
  return html`<section aria-labelledby="template-title">
    <p><a href="#/templates">← Templates</a></p>
    <div class="title-row">
      <h2 id="template-title">${t.name} v${t.version}</h2><${Status} value=${t.status} />
      ${building && html`<button type="button" onClick=${() => action.run(async () => {
        await call("POST", `/v1/templates/${enc(t.id)}/cancel`);
        found.reload();
      })}>Cancel build</button>`}
      <${ConfirmButton} label="Delete" confirm=${`Delete ${t.name} v${t.version}`}
        onConfirm=${() => action.run(async () => { await call("DELETE", `/v1/templates/${enc(t.id)}`); go("templates"); })} />
    </div>
    <${Problem} error=${action.error} />
    ${t.reason && html`<p class="problem">${t.reason}</p>`}
    <dl class="facts">
      <div><dt>Id</dt><dd>${t.id}</dd></div><div><dt>From</dt><dd>${t.base}</dd></div>
      <div><dt>Steps</dt><dd>${t.steps_total} (${t.steps_cached} cached)</dd></div>
      <div><dt>Built</dt><dd>${when(t.built_at)}</dd></div>
    </dl>
    <details><summary>Dockerfile</summary><pre class="out">${t.dockerfile}</pre></details>
    <${BuildLog} template=${t} onFinal=${found.reload} />
  </section>`;
}
