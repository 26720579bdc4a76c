// A sandbox's metrics: the timeseries route polled at its sampling interval, drawn as
// charts of CPU, memory, disk and network.
import { useEffect, useState } from "preact/hooks";
import { bytes, enc, get } from "./api.js";
import { LineChart } from "./chart.js";
import { html, Problem } from "./ui.js";

const pct = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(1)} %`);
const size = (v) => bytes(v);

/** Per-second rates from counters since start (null where a counter went back). */
function rates(samples, field, times) {
  return samples.map((s, i) => {
    if (i === 0 || s[field] === null || samples[i - 1][field] === null) return null;
    const dt = (times[i] - times[i - 1]) / 1000;
    const delta = s[field] - samples[i - 1][field];
    return dt > 0 && delta >= 0 ? delta / dt : null;
  });
}

export function MetricsTab({ sandbox }) {
  const [series, setSeries] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let timer = null;
    let live = true;
    const load = async () => {
      try {
        const since = new Date(Date.now() - 15 * 60 * 1000).toISOString();
        const data = await get(`/v1/sandboxes/${enc(sandbox.id)}/metrics/timeseries?since=${enc(since)}`);
        if (!live) return;
        setSeries(data);
        setError(null);
        timer = setTimeout(load, Math.max(1000, Math.min(10000, data.interval_s * 1000)));
      } catch (e) {
        if (!live) return;
        setError(e);
        timer = setTimeout(load, 10000);
      }
    };
    load();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [sandbox.id]);
  if (!series) return html`<div><${Problem} error=${error} /><p class="muted">Loading metrics…</p></div>`;
  const samples = series.samples;
  const times = samples.map((s) => new Date(s.timestamp));
  const last = samples[samples.length - 1];
  return html`<div>
    <${Problem} error=${error} />
    <p class="muted">Sampled every ${series.interval_s} s; the last 15 minutes.
      ${samples.length === 0 && " No samples yet: the sandbox has not been running through a sampling round."}</p>
    <div class="charts">
      <${LineChart} title="CPU" format=${pct} max=${100} times=${times}
        series=${[{ label: "used", className: "a", values: samples.map((s) => s.cpu_used_pct) }]} />
      <${LineChart} title="Memory" format=${size} times=${times}
        max=${last?.mem_total_bytes ?? undefined}
        series=${[{ label: "used", className: "a", values: samples.map((s) => s.mem_used_bytes) }]} />
      <${LineChart} title="Disk" format=${size} times=${times}
        max=${last?.disk_total_bytes ?? undefined}
        series=${[{ label: "used", className: "a", values: samples.map((s) => s.disk_used_bytes) }]} />
      <${LineChart} title="Network" format=${(v) => `${size(v)}/s`} times=${times}
        series=${[
          { label: "received", className: "a", values: rates(samples, "net_rx_bytes", times) },
          { label: "sent", className: "b", values: rates(samples, "net_tx_bytes", times) },
        ]} />
    </div>
    ${last && html`<p>Processes: ${last.processes}; vCPUs: ${last.cpu_count}.</p>`}
  </div>`;
}
