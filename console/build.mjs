// Builds the console into src/hutch/api/console/static: index.html and hashed assets.
// Also writes SOURCES.sha256, the hash of everything the build read, so a test can tell
// a committed bundle that is older than its sources (without Node).
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { constants, gzipSync } from "node:zlib";

const out = "../src/hutch/api/console/static";
rmSync(join(out, "assets"), { recursive: true, force: true });
mkdirSync(join(out, "assets"), { recursive: true });

const result = await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  outdir: join(out, "assets"),
  splitting: true, // xterm.js (most of the bytes) is its own chunk, loaded with a terminal
  entryNames: "[name]-[hash]",
  chunkNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  legalComments: "linked",
  logLevel: "warning",
});
const files = Object.keys(result.metafile.outputs).map((p) => p.split("/").pop());
// Served as they are to a browser that takes gzip (every one does): about a quarter of the bytes.
for (const name of files.filter((f) => /\.(js|css)$/.test(f))) {
  const path = join(out, "assets", name);
  writeFileSync(`${path}.gz`, gzipSync(readFileSync(path), { level: constants.Z_BEST_COMPRESSION }));
}
const js = files.find((f) => f.startsWith("main-") && f.endsWith(".js"));
const css = files.find((f) => f.startsWith("main-") && f.endsWith(".css"));

writeFileSync(
  join(out, "index.html"),
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hutch console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/assets/${css}">
<script type="module" src="/console/assets/${js}"></script>
</head>
<body>
<div id="app"><noscript>The hutch console needs JavaScript.</noscript></div>
</body>
</html>
`,
);

export function sourcesHash() {
  const hash = createHash("sha256");
  const names = ["build.mjs", "package.json", "package-lock.json"].concat(
    readdirSync("src").sort().map((n) => join("src", n)),
  );
  for (const name of names) {
    hash.update(name + "\0");
    hash.update(readFileSync(name));
    hash.update("\0");
  }
  return hash.digest("hex");
}
writeFileSync(join(out, "SOURCES.sha256"), sourcesHash() + "\n");
console.log(`built ${files.join(", ")}`);
