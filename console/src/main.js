// The console's shell: hash routes, the login (an API key kept in sessionStorage only),
// the navigation and the pages.
import "@xterm/xterm/css/xterm.css";
import "./style.css";
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { ApiError, get, session } from "./api.js";
import { go, html, Problem } from "./ui.js";
import { SandboxList } from "./sandboxes.js";
import { SandboxPage } from "./sandbox.js";
import { Networks, Disks, Hosts, Keys } from "./resources.js";
import { Templates, TemplatePage } from "./templates.js";
import { Deploys, Events } from "./events.js";
import { Webhooks } from "./webhooks.js";

const NAV = [
  ["sandboxes", "Sandboxes"],
  ["templates", "Templates"],
  ["networks", "Networks"],
  ["disks", "Disks"],
  ["deploys", "Deploys"],
  ["events", "Events"],
  ["webhooks", "Webhooks"],
  ["keys", "API keys"],
  ["hosts", "Hosts"],
];

function currentRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  return parts.map(decodeURIComponent);
}

function Login({ onLogin, notice }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(notice);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const me = await get("/v1/whoami", { key: key.trim() });
      session.set(key.trim());
      onLogin(me);
    } catch (e) {
      setError(e.status === 401 ? new ApiError(401, `That key was refused: ${e.message}`) : e);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="login">
    <h1>hutch console</h1>
    <form onSubmit=${submit} aria-describedby="login-help">
      <label for="api-key">API key</label>
      <input id="api-key" name="api-key" type="password" autocomplete="off" required
        value=${key} onInput=${(e) => setKey(e.target.value)} />
      <button type="submit" disabled=${busy}>${busy ? "Checking…" : "Log in"}</button>
      <p id="login-help" class="muted">Make one with <code>hutch keys create --user NAME</code>.
        It is kept in this tab only (sessionStorage) and sent as <code>X-Api-Key</code>.</p>
      <${Problem} error=${error} />
    </form>
  </main>`;
}

function Page({ route, me }) {
  const [section, id, tab] = route;
  switch (section) {
    case "sandboxes":
      return id ? html`<${SandboxPage} id=${id} tab=${tab || "terminal"} />` : html`<${SandboxList} />`;
    case "templates":
      return id ? html`<${TemplatePage} id=${id} />` : html`<${Templates} />`;
    case "networks":
      return html`<${Networks} />`;
    case "disks":
      return html`<${Disks} />`;
    case "deploys":
      return html`<${Deploys} />`;
    case "events":
      return html`<${Events} />`;
    case "webhooks":
      return html`<${Webhooks} />`;
    case "keys":
      return html`<${Keys} me=${me} />`;
    case "hosts":
      return html`<${Hosts} />`;
    default:
      return html`<section><h2>Not found</h2><p>No page <code>${route.join("/")}</code>.
        <a href="#/sandboxes">Sandboxes</a></p></section>`;
  }
}

function App() {
  const [route, setRoute] = useState(currentRoute());
  const [me, setMe] = useState(null);
  const [checking, setChecking] = useState(Boolean(session.key()));
  const [notice, setNotice] = useState(null);
  useEffect(() => {
    const onHash = () => setRoute(currentRoute());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  useEffect(() => {
    if (!session.key()) return;
    get("/v1/whoami")
      .then(setMe)
      .catch((e) => {
        session.clear();
        setNotice(new ApiError(e.status, `Logged out: ${e.message}`));
      })
      .finally(() => setChecking(false));
  }, []);
  if (checking) return html`<p class="muted">Checking your key…</p>`;
  if (!me) return html`<${Login} notice=${notice} onLogin=${(who) => { setMe(who); if (!route.length) go("sandboxes"); }} />`;
  const logout = () => {
    session.clear();
    setMe(null);
  };
  const section = route[0] || "sandboxes";
  return html`<div class="layout">
    <a class="skip" href="#main">Skip to content</a>
    <header>
      <span class="brand">hutch</span>
      <nav aria-label="Sections">
        <ul>${NAV.map(([id, label]) => html`<li><a href=${`#/${id}`}
          aria-current=${section === id ? "page" : undefined}>${label}</a></li>`)}</ul>
      </nav>
      <span class="who">Signed in as <strong data-testid="user">${me.user_id}</strong></span>
      <button type="button" onClick=${logout}>Log out</button>
    </header>
    <main id="main" tabindex="-1"><${Page} route=${route.length ? route : ["sandboxes"]} me=${me} /></main>
  </div>`;
}

render(html`<${App} />`, document.getElementById("app"));
