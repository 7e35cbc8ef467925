// Builds the dashboard into one self-contained HTML file: the bundled script and the stylesheet inlined into
// src/index.html, written to the Python package (server/dessert_mcp/dashboard/dashboard.html), which ships it.
// Deterministic: the same sources and lockfile give the same bytes (no timestamps, no absolute paths).
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { rolldown } from "rolldown";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
// `node build.mjs [OUT]`: OUT defaults to the shipped page; the staleness test builds elsewhere and compares.
const OUT = process.argv[2] ?? here("../server/dessert_mcp/dashboard/dashboard.html");

async function bundleScript() {
  const bundle = await rolldown({ input: here("src/main.ts"), platform: "browser", cwd: here(".") });
  try {
    const { output } = await bundle.generate({ format: "iife", minify: true, comments: false });
    if (output.length !== 1) throw new Error(`expected one chunk, got ${output.length}`);
    return { code: output[0].code, packages: await packagesOf(output[0].moduleIds) };
  } finally {
    await bundle.close();
  }
}

// The npm packages bundled into the page, with their licences, for a notice at the top of the file.
async function packagesOf(moduleIds) {
  const roots = new Set();
  for (const id of moduleIds) {
    const match = id.replaceAll("\\", "/").match(/^(.*\/node_modules\/(?:@[^/]+\/)?[^/]+)\//);
    if (match) roots.add(match[1]);
  }
  const packages = await Promise.all(
    [...roots].map(async (dir) => JSON.parse(await readFile(`${dir}/package.json`, "utf8"))),
  );
  return packages
    .map(({ name, version, license }) => `${name} ${version} (${license})`)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function minifyCss(css) {
  return css
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/\s+/g, " ")
    .replace(/\s*([{}:;,>])\s*/g, "$1")
    .replace(/;}/g, "}")
    .trim();
}

// Inside <script>, only "</script" (any case) and "<!--" could end or confuse the element; escape both.
const safeScript = (code) => code.replace(/<\/(script)/gi, "<\\/$1").replace(/<!--/g, "<\\!--");

const [template, css, { code: script, packages }] = await Promise.all([
  readFile(here("src/index.html"), "utf8"),
  readFile(here("src/styles.css"), "utf8"),
  bundleScript(),
]);
for (const marker of ["/*STYLES*/", "/*SCRIPT*/", "BUNDLED"]) {
  if (template.split(marker).length !== 2) throw new Error(`src/index.html needs exactly one ${marker}`);
}
const html = template
  .replace("BUNDLED", () => packages.join(", ").replaceAll("--", "- -"))
  .replace("/*STYLES*/", () => minifyCss(css))
  .replace("/*SCRIPT*/", () => safeScript(script).trimEnd());
await writeFile(OUT, html);
console.log(`wrote ${OUT} (${Buffer.byteLength(html)} bytes)`);
