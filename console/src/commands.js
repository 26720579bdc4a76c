// Commands: run one through exec, and the history of what this console ran in the
// sandbox (kept in the tab's sessionStorage), beside the sandbox's processes.
import { useState } from "preact/hooks";
import { call, enc, get, when } from "./api.js";
import { html, Problem, useAction, useLoad } from "./ui.js";

const historyKey = (id) => `hutch.exec.${id}`;

function readHistory(id) {
  try {
    return JSON.parse(sessionStorage.getItem(historyKey(id)) || "[]");
  } catch {
    return [];
  }
}

export function CommandsTab({ sandbox }) {
  const [line, setLine] = useState("");
  const [history, setHistory] = useState(() => readHistory(sandbox.id));
  const action = useAction();
  const processes = useLoad(async () => (await get(`/v1/sandboxes/${enc(sandbox.id)}/processes`)).processes,
    [sandbox.id], 5000);
  const run = (event) => {
    event.preventDefault();
    const cmd = line.trim();
    if (!cmd) return;
    action.run(async () => {
      const started = new Date().toISOString();
      const ran = await call("POST", `/v1/sandboxes/${enc(sandbox.id)}/exec`, { body: { cmd } });
      const entry = { cmd, at: started, ms: ran.exec_ms, ...ran.result };
      const next = [entry, ...readHistory(sandbox.id)].slice(0, 50);
      sessionStorage.setItem(historyKey(sandbox.id), JSON.stringify(next));
      setHistory(next);
      setLine("");
    });
  };
  return html`<div>
    <form class="inline" onSubmit=${run}>
      <label for="exec-cmd">Command</label>
      <input id="exec-cmd" class="grow" value=${line} onInput=${(e) => setLine(e.target.value)}
        placeholder="uname -a" autocomplete="off" />
      <button type="submit" disabled=${action.busy}>${action.busy ? "Running…" : "Run"}</button>
    </form>
    <${Problem} error=${action.error} />
    <h3>What this console ran</h3>
    ${history.length === 0 && html`<p class="muted">Nothing yet in this tab.</p>`}
    <ol class="history">${history.map((h) => html`<li class="card">
      <p><code>${h.cmd}</code> <span class="muted">${when(h.at)}, ${h.ms} ms, exit ${h.exit_code ?? h.error}</span></p>
      ${h.stdout && html`<pre class="out">${h.stdout}</pre>`}
      ${h.stderr && html`<pre class="out err">${h.stderr}</pre>`}
    </li>`)}</ol>
    <h3>Processes</h3>
    <${Problem} error=${processes.error} />
    ${processes.data && html`<div class="table-wrap"><table>
      <caption class="sr-only">The sandbox's managed processes</caption>
      <thead><tr><th scope="col">Command</th><th scope="col">Kind</th><th scope="col">State</th>
        <th scope="col">Started</th><th scope="col">Exit</th></tr></thead>
      <tbody>${processes.data.map((p) => html`<tr key=${p.process_id}>
        <td><code>${[p.cmd, ...p.args].join(" ")}</code></td><td>${p.kind}</td><td>${p.state}</td>
        <td>${when(p.created_at)}</td><td>${p.exit_code ?? "–"}</td></tr>`)}</tbody>
    </table></div>`}
  </div>`;
}
