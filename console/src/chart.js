// A small SVG line chart: no library, scales to its box, with a text alternative.
import { html } from "./ui.js";

const W = 600;
const H = 160;
const PAD = 4;

/**
 * series: [{ label, values: [number|null], className }]; times: [Date] of the samples.
 * `max` fixes the top of the scale (e.g. 100 for %); otherwise the largest value.
 */
export function LineChart({ title, series, times, max, format }) {
  const values = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const top = max ?? Math.max(1, ...values);
  const n = times.length;
  const x = (i) => (n <= 1 ? W / 2 : PAD + (i * (W - 2 * PAD)) / (n - 1));
  const y = (v) => H - PAD - (Math.min(v, top) / top) * (H - 2 * PAD);
  const latest = series.map((s) => `${s.label} ${format(s.values[s.values.length - 1])}`).join(", ");
  const span = n > 1 ? Math.round((times[n - 1] - times[0]) / 1000) : 0;
  const description = n
    ? `${title}: ${n} samples over ${span} s; now ${latest}; scale 0 to ${format(top)}.`
    : `${title}: no samples yet.`;
  return html`<figure class="chart">
    <figcaption><strong>${title}</strong> <span class="muted">${n ? latest : "no samples yet"}</span></figcaption>
    <svg viewBox=${`0 0 ${W} ${H}`} preserveAspectRatio="none" role="img" aria-label=${description}
      data-samples=${n}>
      <line class="axis" x1="0" y1=${H - PAD} x2=${W} y2=${H - PAD} />
      ${series.map((s) => {
        const points = s.values
          .map((v, i) => (v === null || v === undefined ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`))
          .filter(Boolean);
        return html`<polyline class=${`line ${s.className}`} points=${points.join(" ")}
          data-points=${points.length} vector-effect="non-scaling-stroke" />`;
      })}
    </svg>
    <p class="legend">${series.map((s) => html`<span class=${`key ${s.className}`}>${s.label}</span>`)}
      <span class="muted"> · top ${format(top)}</span></p>
  </figure>`;
}
