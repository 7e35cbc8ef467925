// A second, independent 2026-07-28 client: the official TypeScript SDK's Client (@modelcontextprotocol/client),
// pinned to 2026-07-28, opens subscriptions/listen on dessert://balance and dessert://usage, calls get_balance (the
// first balance the server sees is a change) and prints the first notifications/resources/updated it hears as JSON.
//
//   node listen_client.mjs stdio <command> [args...]     (the server's environment comes from this process's)
//   node listen_client.mjs http <url>
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

// The SDK as `make foreign-tools` installed it (with the MCP Inspector) in the repo's .tools/node_modules.
const tools = createRequire(new URL("../../.tools/node_modules/", import.meta.url));
const sdk = async (name) => import(pathToFileURL(tools.resolve(name)).href);
const { Client, StreamableHTTPClientTransport } = await sdk("@modelcontextprotocol/client");
const { StdioClientTransport } = await sdk("@modelcontextprotocol/client/stdio");

const [mode, target, ...rest] = process.argv.slice(2);
const transport =
  mode === "stdio"
    ? new StdioClientTransport({ command: target, args: rest, env: { ...process.env }, stderr: "inherit" })
    : new StreamableHTTPClientTransport(new URL(target));
const client = new Client(
  { name: "dessert-listen-check", version: "1.0.0" },
  { versionNegotiation: { mode: { pin: "2026-07-28" } } },
);

const heard = new Promise((resolve) => {
  client.setNotificationHandler("notifications/resources/updated", (notification) => resolve(notification));
});
await client.connect(transport);
const subscription = await client.listen({ resourceSubscriptions: ["dessert://balance", "dessert://usage"] });
const called = await client.callTool({ name: "dessert_get_balance", arguments: {} });
const notification = await heard;
console.log(
  JSON.stringify({
    era: client.getProtocolEra(),
    honored: subscription.honoredFilter,
    called: called.isError !== true,
    method: notification.method,
    uri: notification.params.uri,
  }),
);
await subscription.close();
await client.close();
