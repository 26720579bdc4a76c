// Talking to hutch's API: the key from sessionStorage on every call, JSend errors as
// ApiError with a readable message, NDJSON streams read line by line.

const KEY = "hutch.key";

export const session = {
  key: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, message, fields = {}) {
    super(message);
    this.status = status;
    this.fields = fields;
  }
}

function describe(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let fields = {};
  try {
    const body = await response.json();
    if (body && body.status === "fail" && body.data && typeof body.data === "object") {
      fields = body.data;
      message = Object.entries(body.data)
        .map(([field, why]) => (field === "message" ? describe(why) : `${field}: ${describe(why)}`))
        .join("; ");
    } else if (body && body.message) {
      message = body.message;
    }
  } catch {
    // not JSON: the status line says it
  }
  return new ApiError(response.status, message, fields);
}

export async function request(method, path, { body, raw, signal, key } = {}) {
  const headers = { "X-Api-Key": key || session.key() || "" };
  let payload;
  if (raw !== undefined) {
    payload = raw;
    headers["Content-Type"] = "application/octet-stream";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, `hutch cannot be reached (${error.message})`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function call(method, path, options) {
  const response = await request(method, path, options);
  const body = await response.json();
  return body.data;
}

export const get = (path, options) => call("GET", path, options);

/** Every item of a paginated list (up to `most`). */
export async function all(path, most = 1000) {
  const items = [];
  const sep = path.includes("?") ? "&" : "?";
  for (let offset = 0; offset < most; offset += 500) {
    const page = await get(`${path}${sep}limit=500&offset=${offset}`);
    items.push(...page.data);
    if (page.data.length < 500) break;
  }
  return items;
}

/** Reads an NDJSON response, calling `onItem` with each parsed line; ends with the stream. */
export async function ndjson(path, onItem, signal) {
  const response = await request("GET", path, { signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (line) onItem(JSON.parse(line));
    }
  }
}

export function websocketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/** The subprotocols that carry the key: a browser's WebSocket cannot send headers. */
export function websocketProtocols() {
  return ["hutch", `hutch.key.${session.key()}`];
}

export const enc = encodeURIComponent;

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let value = n;
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i += 1;
  }
  return `${value.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}
