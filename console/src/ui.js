// Shared pieces: htm bound to Preact, data-loading hooks, and small accessible widgets.
import { h } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import htm from "htm";

export const html = htm.bind(h);

export function go(...parts) {
  location.hash = "#/" + parts.map(encodeURIComponent).join("/");
}

/** Loads `load()` now and whenever `deps` change (and every `everyMs`, if given). */
export function useLoad(load, deps, everyMs = 0) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const live = useRef(true);
  const reload = useCallback(async () => {
    try {
      const data = await load();
      if (live.current) setState({ data, error: null, loading: false });
    } catch (error) {
      if (live.current && error.name !== "AbortError") {
        setState((old) => ({ data: old.data, error, loading: false }));
      }
    }
  }, deps);
  useEffect(() => {
    live.current = true;
    setState({ data: null, error: null, loading: true });
    reload();
    const timer = everyMs ? setInterval(reload, everyMs) : null;
    return () => {
      live.current = false;
      if (timer) clearInterval(timer);
    };
  }, [reload]);
  return { ...state, reload };
}

/** `run(fn)` runs an action, keeping `busy` and the error it raised (shown by <Problem>). */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async (fn) => {
    setBusy(true);
    setError(null);
    try {
      return await fn();
    } catch (e) {
      setError(e);
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run, setError };
}

export function Problem({ error }) {
  if (!error) return null;
  const status = error.status ? ` (${error.status})` : "";
  return html`<p class="problem" role="alert">${error.message}${status}</p>`;
}

export function Loading({ what }) {
  return html`<p class="muted" aria-live="polite">Loading ${what}…</p>`;
}

export function Status({ value }) {
  return html`<span class=${`status status-${value}`}>${value}</span>`;
}

/** A button that asks once more before a destructive action. */
export function ConfirmButton({ label, confirm, onConfirm, disabled }) {
  const [asking, setAsking] = useState(false);
  if (!asking) {
    return html`<button type="button" class="danger" disabled=${disabled}
      onClick=${() => setAsking(true)}>${label}</button>`;
  }
  return html`<span class="confirm">
    <button type="button" class="danger" onClick=${() => { setAsking(false); onConfirm(); }}>
      ${confirm}</button>
    <button type="button" onClick=${() => setAsking(false)}>Cancel</button>
  </span>`;
}

/** Tabs with the WAI-ARIA pattern: arrow keys move between them. */
export function Tabs({ tabs, current, onSelect, label }) {
  const onKey = (event) => {
    const i = tabs.findIndex((t) => t.id === current);
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const next = tabs[(i + step + tabs.length) % tabs.length];
    onSelect(next.id);
    requestAnimationFrame(() => document.getElementById(`tab-${next.id}`)?.focus());
  };
  return html`<div class="tabs" role="tablist" aria-label=${label} onKeyDown=${onKey}>
    ${tabs.map((t) => html`<button type="button" role="tab" id=${`tab-${t.id}`}
      aria-selected=${t.id === current} aria-controls=${`panel-${t.id}`}
      tabindex=${t.id === current ? 0 : -1} onClick=${() => onSelect(t.id)}>${t.label}</button>`)}
  </div>`;
}

export function Field({ label, id, hint, children }) {
  return html`<div class="field">
    <label for=${id}>${label}</label>
    ${children}
    ${hint ? html`<small id=${`${id}-hint`} class="muted">${hint}</small>` : null}
  </div>`;
}
