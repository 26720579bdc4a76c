// A live terminal: a pty process (POST …/processes) attached over its WebSocket, the key
// offered as the subprotocol "hutch.key.<key>" beside "hutch". xterm.js is most of the
// console's bytes, so it loads only when a terminal opens (its CSS is in the main sheet).
import { useEffect, useRef, useState } from "preact/hooks";
import { call, enc, request, websocketProtocols, websocketUrl } from "./api.js";
import { html, Problem } from "./ui.js";

const loadXterm = () => Promise.all([import("@xterm/xterm"), import("@xterm/addon-fit")]);

export function TerminalTab({ sandbox }) {
  const box = useRef(null);
  const [state, setState] = useState("starting");
  const [error, setError] = useState(null);
  const [session, setSession] = useState(0);
  useEffect(() => {
    const base = `/v1/sandboxes/${enc(sandbox.id)}/processes`;
    const encoder = new TextEncoder();
    let term = null;
    let fit = null;
    let socket = null;
    let processId = null;
    let gone = false;
    const send = (data) => socket?.readyState === WebSocket.OPEN && socket.send(data);
    const onWindowResize = () => fit?.fit();
    (async () => {
      try {
        const [{ Terminal }, { FitAddon }] = await loadXterm();
        if (gone) return;
        term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000 });
        fit = new FitAddon();
        term.loadAddon(fit);
        term.open(box.current);
        fit.fit();
        term.onData((data) => send(encoder.encode(data)));
        term.onResize(({ rows, cols }) => send(JSON.stringify({ type: "resize", rows, cols })));
        window.addEventListener("resize", onWindowResize);
        const proc = await call("POST", base, { body: { pty: { rows: term.rows, cols: term.cols } } });
        processId = proc.process_id;
        if (gone) {
          request("DELETE", `${base}/${enc(processId)}?grace_ms=500`).catch(() => {});
          return;
        }
        socket = new WebSocket(websocketUrl(`${base}/${enc(processId)}/ws`), websocketProtocols());
        socket.binaryType = "arraybuffer";
        socket.onopen = () => {
          setState("connected");
          term.focus();
        };
        socket.onmessage = (message) => {
          if (typeof message.data !== "string") {
            term.write(new Uint8Array(message.data));
            return;
          }
          const frame = JSON.parse(message.data);
          if (frame.type === "exit") {
            term.write(`\r\n[the shell exited: ${frame.exit_code}]\r\n`);
            setState("exited");
          }
        };
        socket.onclose = () => !gone && setState((old) => (old === "exited" ? old : "closed"));
      } catch (e) {
        if (gone) return;
        setError(e);
        setState("failed");
      }
    })();
    return () => {
      gone = true;
      window.removeEventListener("resize", onWindowResize);
      term?.dispose();
      // As a terminal window closing does: hang up, and the shell ends. A socket still
      // connecting hangs up once open (closing it now would be a console error).
      const hangUp = () => {
        socket.send(JSON.stringify({ type: "signal", signal: "SIGHUP" }));
        socket.close();
      };
      if (socket?.readyState === WebSocket.OPEN) hangUp();
      else if (socket?.readyState === WebSocket.CONNECTING) socket.onopen = hangUp;
    };
  }, [sandbox.id, session]);
  return html`<div>
    <div class="title-row">
      <p class="muted" aria-live="polite">Terminal: <span data-testid="terminal-state">${state}</span></p>
      ${(state === "exited" || state === "closed" || state === "failed") &&
        html`<button type="button" onClick=${() => { setError(null); setState("starting"); setSession(session + 1); }}>
          New terminal</button>`}
    </div>
    <${Problem} error=${error} />
    <div class="console-terminal" ref=${box} role="region" aria-label="Terminal"></div>
  </div>`;
}
