// A live terminal: a pty process (POST …/processes) attached over its WebSocket, the key
// offered as the subprotocol "hutch.key.<key>" beside "hutch".
import { useEffect, useRef, useState } from "preact/hooks";
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { call, enc, request, websocketProtocols, websocketUrl } from "./api.js";
import { html, Problem } from "./ui.js";

export function TerminalTab({ sandbox }) {
  const box = useRef(null);
  const [state, setState] = useState("starting");
  const [error, setError] = useState(null);
  const [session, setSession] = useState(0);
  useEffect(() => {
    const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000 });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(box.current);
    fit.fit();
    const base = `/v1/sandboxes/${enc(sandbox.id)}/processes`;
    let socket = null;
    let processId = null;
    let gone = false;
    const encoder = new TextEncoder();
    const send = (data) => socket?.readyState === WebSocket.OPEN && socket.send(data);
    term.onData((data) => send(encoder.encode(data)));
    term.onResize(({ rows, cols }) => send(JSON.stringify({ type: "resize", rows, cols })));
    (async () => {
      try {
        const proc = await call("POST", base, { body: { pty: { rows: term.rows, cols: term.cols } } });
        processId = proc.process_id;
        if (gone) return;
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
        setError(e);
        setState("failed");
      }
    })();
    const onWindowResize = () => fit.fit();
    window.addEventListener("resize", onWindowResize);
    return () => {
      gone = true;
      window.removeEventListener("resize", onWindowResize);
      term.dispose();
      // As a terminal window closing does: hang up, and the shell ends. A socket still
      // connecting hangs up once open (closing it now would be a console error).
      const hangUp = () => {
        socket.send(JSON.stringify({ type: "signal", signal: "SIGHUP" }));
        socket.close();
      };
      if (socket?.readyState === WebSocket.OPEN) hangUp();
      else if (socket?.readyState === WebSocket.CONNECTING) socket.onopen = hangUp;
      else if (processId && !socket) {
        request("DELETE", `${base}/${enc(processId)}?grace_ms=500`).catch(() => {});
      }
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
