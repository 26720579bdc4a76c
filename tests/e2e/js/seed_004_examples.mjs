// The JavaScript examples of seed 004, unchanged and in order (Node 20, platform fetch).
const apiUrl = process.env.NULLSPACE_API_URL;
const apiKey = process.env.NULLSPACE_API_KEY;
const createResponse = await fetch(`${apiUrl}/v1/sandboxes`, {
method: "POST",
headers: {
authorization: `Bearer ${apiKey}`,
"content-type": "application/json",
},
body: JSON.stringify({ template: "base", timeout_ms: 300_000 }),
});
if (!createResponse.ok) {
throw new Error(await createResponse.text());
}
const sandbox = await createResponse.json();
console.log(sandbox.id);
const execResponse = await fetch(`${apiUrl}/v1/sandboxes/${sandbox.id}/exec`, {
method: "POST",
headers: {
authorization: `Bearer ${apiKey}`,
"content-type": "application/json",
},
body: JSON.stringify({
command: "echo hello from nullspace",
shell: true,
timeout_secs: 30,
}),
});
const execResult = await execResponse.json();
console.log(execResult.stdout);
await fetch(`${apiUrl}/v1/sandboxes/${sandbox.id}/exec`, {
method: "POST",
headers: {
authorization: `Bearer ${apiKey}`,
"content-type": "application/json",
},
body: JSON.stringify({
command: "cd /workspace && python3 -m http.server 8080",
shell: true,
background: true,
}),
});
const hostResponse = await fetch(`${apiUrl}/v1/sandboxes/${sandbox.id}/host`, {
method: "POST",
headers: {
authorization: `Bearer ${apiKey}`,
"content-type": "application/json",
},
body: JSON.stringify({ port: 8080 }),
});
const host = await hostResponse.json();
console.log(host.url ?? host.host);
await fetch(`${apiUrl}/v1/sandboxes/${sandbox.id}`, {
method: "DELETE",
headers: { authorization: `Bearer ${apiKey}` },
});
