// One sandbox: its facts and actions, and tabs for the terminal, files, commands,
// metrics and egress.
import { enc, get, when } from "./api.js";
import { go, html, Loading, Problem, Status, Tabs, useLoad } from "./ui.js";
import { SandboxActions, useEvents } from "./sandboxes.js";
import { TerminalTab } from "./terminal.js";
import { FilesTab } from "./files.js";
import { CommandsTab } from "./commands.js";
import { MetricsTab } from "./metrics.js";
import { EgressTab } from "./egress.js";

const TABS = [
  { id: "terminal", label: "Terminal" },
  { id: "files", label: "Files" },
  { id: "commands", label: "Commands" },
  { id: "metrics", label: "Metrics" },
  { id: "egress", label: "Egress and bandwidth" },
];

function Panel({ tab, sandbox }) {
  if (tab === "files") return html`<${FilesTab} sandbox=${sandbox} />`;
  if (tab === "commands") return html`<${CommandsTab} sandbox=${sandbox} />`;
  if (tab === "metrics") return html`<${MetricsTab} sandbox=${sandbox} />`;
  if (tab === "egress") return html`<${EgressTab} sandbox=${sandbox} />`;
  return html`<${TerminalTab} sandbox=${sandbox} />`;
}

export function SandboxPage({ id, tab }) {
  const found = useLoad(() => get(`/v1/sandboxes/${enc(id)}`), [id]);
  useEvents((event) => event.subject_id === found.data?.id && found.reload(), `&subject_id=${enc(id)}`);
  if (found.error && found.error.status === 404) {
    return html`<section><h2>Sandbox not found</h2>
      <p role="alert">There is no sandbox <code>${id}</code> of yours.</p>
      <p><a href="#/sandboxes">Back to your sandboxes</a></p></section>`;
  }
  if (!found.data) {
    return found.error ? html`<${Problem} error=${found.error} />` : html`<${Loading} what="the sandbox" />`;
  }
  const s = found.data;
  const facts = [
    ["Id", s.id], ["IP", s.ip || "–"], ["Shape", `${s.shape} (${s.vcpu} vCPU, ${s.mem_mib} MiB, ${s.disk_mib} MiB disk)`],
    ["Image", s.rootfs], ["Runtime", s.runtime], ["Created", when(s.created_at)],
    ["Forked from", s.forked_from || "–"],
  ];
  return html`<section aria-labelledby="sandbox-title">
    <p><a href="#/sandboxes">← Sandboxes</a></p>
    <div class="title-row">
      <h2 id="sandbox-title">${s.name || s.id}</h2>
      <${Status} value=${s.status} />
      <${SandboxActions} sandbox=${s} onChanged=${found.reload} onDeleted=${() => go("sandboxes")} />
    </div>
    ${s.reason && html`<p class="problem">${s.reason}</p>`}
    <dl class="facts">${facts.map(([k, v]) => html`<div><dt>${k}</dt><dd>${v}</dd></div>`)}</dl>
    <${Tabs} label="Sandbox views" tabs=${TABS} current=${tab}
      onSelect=${(next) => go("sandboxes", id, next)} />
    <div class="panel" role="tabpanel" id=${`panel-${tab}`} aria-labelledby=${`tab-${tab}`}>
      ${s.status === "running" || tab === "metrics" || tab === "egress"
        ? html`<${Panel} key=${tab} tab=${tab} sandbox=${s} />`
        : html`<p class="muted">The sandbox is ${s.status}; resume it to use this.</p>`}
    </div>
  </section>`;
}
