// The bench's peer: dessert-mcp's get_balance job on the official TypeScript MCP SDK, written as its documentation
// writes a stateless server (a fresh McpServer and transport per request, on node:http), with the SDK's documented
// `enableJsonResponse` so that it answers with the same JSON bodies dessert-mcp does.
//
//   node server.mjs --port N     stateless streamable HTTP on 127.0.0.1:N/mcp
//   node server.mjs --stdio      over stdio (for the cold-start and stdio per-call rows)
//
// Reads DESSERT_API_KEY and DESSERT_API_BASE_URL as dessert-mcp does.
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import * as z from 'zod';

const { values: args } = parseArgs({ options: { port: { type: 'string' }, stdio: { type: 'boolean' } } });
const key = process.env.DESSERT_API_KEY;
const balanceUrl = new URL('/v1/balance', process.env.DESSERT_API_BASE_URL ?? 'https://api.dessert.dev').href;

// The API's documented shape, checked on every answer as dessert-mcp checks it, and the report built from it.
const Pricing = z.object({
  credit_usd: z.number().min(0),
  static_ad_credits: z.int().min(1),
  full_ad_credits: z.int().min(1),
});
const Balance = z.object({
  credits_balance: z.int(),
  credits_balance_usd_equivalent: z.number(),
  credits_lifetime_purchased: z.int(),
  auto_recharge_enabled: z.boolean(),
  auto_recharge_threshold: z.int(),
  auto_recharge_amount_usd: z.number(),
  pricing: Pricing,
});
const BalanceReport = Balance.extend({
  static_ads_affordable: z.int(),
  full_ads_affordable: z.int(),
  below_auto_recharge_threshold: z.boolean(),
});

async function getBalance() {
  const response = await fetch(balanceUrl, { headers: { Authorization: `Bearer ${key}` } });
  if (!response.ok) {
    return { content: [{ type: 'text', text: `Dessert answered HTTP ${response.status}` }], isError: true };
  }
  const balance = Balance.parse(await response.json());
  const credits = Math.max(balance.credits_balance, 0);
  const report = {
    ...balance,
    static_ads_affordable: Math.floor(credits / balance.pricing.static_ad_credits),
    full_ads_affordable: Math.floor(credits / balance.pricing.full_ad_credits),
    below_auto_recharge_threshold: balance.credits_balance < balance.auto_recharge_threshold,
  };
  return { content: [{ type: 'text', text: JSON.stringify(report) }], structuredContent: report };
}

function buildServer() {
  const server = new McpServer({ name: 'ts-peer', version: '1.0.0' });
  server.registerTool(
    'dessert_get_balance',
    {
      description: "Get the Dessert account's current credit balance and pricing.",
      inputSchema: {},
      outputSchema: BalanceReport.shape,
      annotations: { readOnlyHint: true },
    },
    getBalance,
  );
  return server;
}

if (args.stdio) {
  await buildServer().connect(new StdioServerTransport());
} else {
  const http = createServer(async (req, res) => {
    if (req.url !== '/mcp' || req.method !== 'POST') {
      res.writeHead(405, { Allow: 'POST' }).end();
      return;
    }
    const server = buildServer();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      transport.close();
      server.close();
    });
    try {
      await server.connect(transport);
      await transport.handleRequest(req, res);
    } catch (error) {
      console.error('Error handling MCP request:', error);
      if (!res.headersSent) res.writeHead(500).end();
    }
  });
  http.listen(Number(args.port), '127.0.0.1');
}
