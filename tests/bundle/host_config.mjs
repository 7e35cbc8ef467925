// The launch command a host derives from a bundle's manifest, computed by the MCPB package's own
// getMcpConfigForManifest (what Claude Desktop's extension loader uses): ${__dirname} and ${user_config.*}
// substituted, manifest defaults first, then the user's values.
//
// usage: node host_config.mjs <tools dir with node_modules> <unpacked bundle dir> '<user config JSON>'
// prints the resolved {command, args, env} as JSON, or null when a required setting is missing.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, sep } from "node:path";
import { pathToFileURL } from "node:url";

const [toolsDir, bundleDir, userConfigJson] = process.argv.slice(2);
const entry = createRequire(join(toolsDir, "package.json")).resolve("@anthropic-ai/mcpb");
const { getMcpConfigForManifest } = await import(pathToFileURL(entry).href);

const manifest = JSON.parse(readFileSync(join(bundleDir, "manifest.json"), "utf8"));
const config = await getMcpConfigForManifest({
  manifest,
  extensionPath: bundleDir,
  systemDirs: {},
  userConfig: JSON.parse(userConfigJson),
  pathSeparator: sep,
  logger: { log: () => {}, warn: (m) => console.error(m), error: (m) => console.error(m) },
});
process.stdout.write(JSON.stringify(config ?? null) + "\n");
