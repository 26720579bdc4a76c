// The event log (live), and deploys: their lifecycle events (the deploy routes themselves
// sign with a wallet, not an API key, so the console reads deploys from the event log).
import { useState } from "preact/hooks";
import { get, when } from "./api.js";
import { html, Loading, Problem, useLoad } from "./ui.js";
import { useEvents } from "./sandboxes.js";

function EventTable({ events, caption }) {
  return html`<div class="table-wrap"><table>
    <caption class="sr-only">${caption}</caption>
    <thead><tr><th scope="col">When</th><th scope="col">Event</th><th scope="col">Subject</th>
      <th scope="col">Data</th></tr></thead>
    <tbody>${events.map((e) => html`<tr key=${e.id}>
      <td>${when(e.created_at)}</td><td>${e.type}</td>
      <td>${e.type.startsWith("sandbox.") ? html`<a href=${`#/sandboxes/${e.subject_id}`}>${e.subject_id}</a>` : e.subject_id}</td>
      <td><code>${JSON.stringify(e.data)}</code></td></tr>`)}</tbody>
  </table></div>`;
}

export function Events() {
  const past = useLoad(async () => {
    const first = await get("/v1/events?limit=1");
    const total = first.pagination?.total ?? 0;
    const page = await get(`/v1/events?limit=200&offset=${Math.max(0, total - 200)}`);
    return page.data.reverse();
  }, []);
  const [fresh, setFresh] = useState([]);
  useEvents((event) => setFresh((old) => [event, ...old].slice(0, 500)));
  const seen = new Set(fresh.map((e) => e.id));
  const events = [...fresh, ...(past.data || []).filter((e) => !seen.has(e.id))];
  return html`<section aria-labelledby="events-title">
    <h2 id="events-title">Events</h2>
    <p class="muted">Newest first; new ones appear as they happen.</p>
    <${Problem} error=${past.error} />
    ${past.loading && html`<${Loading} what="events" />`}
    ${past.data && html`<${EventTable} events=${events} caption="Lifecycle events" />`}
  </section>`;
}

export function Deploys() {
  const list = useLoad(async () => (await get("/v1/events?type=deployment.ready,deployment.failed&limit=500")).data.reverse(), [], 10000);
  return html`<section aria-labelledby="deploys-title">
    <h2 id="deploys-title">Deploys</h2>
    <p class="muted">Deploys are made and listed by wallet-signed requests (<code>/agent/…</code>), which an
      API key cannot sign; this list is their <code>deployment.ready</code> and <code>deployment.failed</code>
      events for your user, read-only.</p>
    <${Problem} error=${list.error} />
    ${list.loading && html`<${Loading} what="deploys" />`}
    ${list.data && list.data.length === 0 && html`<p class="muted">No deploys yet.</p>`}
    ${list.data && list.data.length > 0 && html`<${EventTable} events=${list.data} caption="Deploy events" />`}
  </section>`;
}
