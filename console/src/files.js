// A file browser: folders listed with find(1) through exec, files uploaded with PUT and
// downloaded with GET on …/files.
import { useState } from "preact/hooks";
import { bytes, call, enc, request } from "./api.js";
import { html, Loading, Problem, useAction, useLoad } from "./ui.js";

function join(dir, name) {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

function parent(dir) {
  const up = dir.replace(/\/+$/, "").split("/").slice(0, -1).join("/");
  return up || "/";
}

async function listFolder(sandbox, dir) {
  const ran = await call("POST", `/v1/sandboxes/${enc(sandbox.id)}/exec`, {
    body: { cmd: "find", args: [dir, "-mindepth", "1", "-maxdepth", "1", "-printf", "%y\\t%s\\t%f\\n"] },
  });
  if (ran.result.exit_code !== 0) {
    const why = (ran.result.stderr || ran.result.error || "").trim();
    throw new Error(why || `cannot list ${dir}`);
  }
  return ran.result.stdout.split("\n").filter(Boolean).map((line) => {
    const [type, size, ...name] = line.split("\t");
    return { type, size: Number(size), name: name.join("\t") };
  }).sort((a, b) => (a.type === "d" ? 0 : 1) - (b.type === "d" ? 0 : 1) || a.name.localeCompare(b.name));
}

export function FilesTab({ sandbox }) {
  const [dir, setDir] = useState("/tmp");
  const [typed, setTyped] = useState("/tmp");
  const listing = useLoad(() => listFolder(sandbox, dir), [sandbox.id, dir]);
  const action = useAction();
  const [done, setDone] = useState("");
  const open = (next) => {
    setDir(next);
    setTyped(next);
  };
  const upload = (event) => {
    const files = Array.from(event.target.files || []);
    event.target.value = "";
    action.run(async () => {
      for (const file of files) {
        const path = join(dir, file.name);
        await request("PUT", `/v1/sandboxes/${enc(sandbox.id)}/files?path=${enc(path)}`, { raw: file });
      }
      setDone(`Uploaded ${files.map((f) => f.name).join(", ")}`);
      listing.reload();
    });
  };
  const download = (name) => action.run(async () => {
    const path = join(dir, name);
    const response = await request("GET", `/v1/sandboxes/${enc(sandbox.id)}/files?path=${enc(path)}`);
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    setDone(`Downloaded ${name}`);
  });
  return html`<div>
    <form class="inline" onSubmit=${(e) => { e.preventDefault(); open(typed.trim() || "/"); }}>
      <label for="files-dir">Folder</label>
      <input id="files-dir" value=${typed} onInput=${(e) => setTyped(e.target.value)} />
      <button type="submit">Open</button>
      <button type="button" onClick=${() => open(parent(dir))} disabled=${dir === "/"}>Up</button>
      <label class="upload">Upload to this folder
        <input type="file" multiple onChange=${upload} disabled=${action.busy} /></label>
    </form>
    <p class="muted" aria-live="polite">${action.busy ? "Working…" : done}</p>
    <${Problem} error=${action.error || listing.error} />
    ${listing.loading && html`<${Loading} what=${dir} />`}
    ${listing.data && html`<div class="table-wrap"><table>
      <caption class="sr-only">Files in ${dir}</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Size</th><th scope="col">Action</th></tr></thead>
      <tbody>
        ${listing.data.length === 0 && html`<tr><td colspan="3" class="muted">Empty folder.</td></tr>`}
        ${listing.data.map((f) => html`<tr key=${f.name} data-file=${f.name}>
          <td>${f.type === "d"
            ? html`<button type="button" class="link" onClick=${() => open(join(dir, f.name))}>${f.name}/</button>`
            : f.name}</td>
          <td>${f.type === "d" ? "folder" : bytes(f.size)}</td>
          <td>${f.type === "f" && html`<button type="button" aria-label=${`Download ${f.name}`}
            onClick=${() => download(f.name)}>Download</button>`}</td>
        </tr>`)}
      </tbody>
    </table></div>`}
  </div>`;
}
