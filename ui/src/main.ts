// The dessert-mcp dashboard: an MCP App view of dessert.get_balance and dessert.get_usage.
//
// The host renders this page in a sandboxed iframe and hands it the result of whichever tool the model called;
// the page then calls the other tool itself (callServerTool, portable names, no arguments), and Refresh calls
// both. When the server keeps history, a 7 / 30 / 90-day range is read through get_usage's pages (history.ts),
// drawn with its gaps left open, and offered as CSV through the host (ui/download-file). Everything shown comes from the tools' structuredContent. Upstream text is data: it only ever reaches
// the DOM through text nodes and attribute values (see dom.ts).

import {
  App,
  applyDocumentTheme,
  applyHostFonts,
  applyHostStyleVariables,
  type McpUiHostContext,
} from "@modelcontextprotocol/ext-apps";
import { balanceChart, gauge, spendChart, type Threshold, typeChart } from "./charts.ts";
import { h, replace } from "./dom.ts";
import {
  combinePages,
  csvName,
  gapDays,
  gapSpans,
  keepsHistory,
  MAX_PAGES,
  nextCursor,
  RANGE_DAYS,
  type RangeDays,
  rangeArguments,
  type RangeReport,
  spanText,
  toCsv,
} from "./history.ts";
import { Formats } from "./format.ts";
import {
  alertsOf,
  asBalance,
  asUsage,
  type BalanceReport,
  balanceSeries,
  daysUntilThreshold,
  forecastBasis,
  forecastOf,
  forecastRange,
  kindOf,
  perDay,
  perType,
  transactionsFooter,
  TX_TYPES,
  type TxType,
  type UsageReport,
} from "./model.ts";

type Kind = "balance" | "usage";
type Filter = TxType | "all";

interface ToolResult {
  isError?: boolean;
  structuredContent?: unknown;
  content?: unknown;
}

const TOOL: Record<Kind, string> = { balance: "dessert_get_balance", usage: "dessert_get_usage" };

const state = {
  balance: null as BalanceReport | null,
  usage: null as UsageReport | null,
  errors: {} as Partial<Record<Kind, string>>,
  loading: new Set<Kind | "range">(),
  /** The range shown: null for the tool's own result (the API's last 50 rows), else days of kept history. */
  range: null as RangeDays | null,
  history: null as RangeReport | null,
  /** The CSV shown to copy when the host cannot download files. */
  csv: null as string | null,
  filter: "all" as Filter,
  updatedAt: null as number | null,
  connected: false,
};

let fmt = new Formats({ locale: undefined, timeZone: undefined });

/** The usage the charts and the table show: the chosen range once read, else the tool's result. */
function shown(): UsageReport | null {
  return state.range !== null ? (state.history?.usage ?? null) : state.usage;
}

// The page's fixed frame; each section's content is rebuilt from `state`.
const root = document.getElementById("app")!;
const status = h("p", { class: "status", role: "status", "aria-live": "polite" });
const refresh = h("button", { type: "button", class: "refresh", "data-testid": "refresh" }, "Refresh");
const alerts = h("div", { class: "alerts", "data-testid": "alerts" });
const balanceCard = h("section", { class: "card balance", "aria-labelledby": "balance-h", "data-testid": "balance" });
const forecastCard = h("section", { class: "card forecast", "aria-labelledby": "forecast-h", "data-testid": "forecast" });
const historyCard = h("section", { class: "card wide", "aria-labelledby": "history-h", "data-testid": "history" });
const spendCard = h("section", { class: "card", "aria-labelledby": "spend-h", "data-testid": "spend" });
const typesCard = h("section", { class: "card", "aria-labelledby": "types-h", "data-testid": "types" });
const txCard = h("section", { class: "card wide", "aria-labelledby": "tx-h", "data-testid": "transactions" });
const ranges = h("fieldset", { class: "ranges filter", "data-testid": "ranges", hidden: true });

replace(root, 
  h(
    "header",
    { class: "top" },
    h("div", {}, h("h1", {}, "Dessert credits"), status),
    refresh,
  ),
  alerts,
  ranges,
  h("div", { class: "grid" }, balanceCard, forecastCard, historyCard, spendCard, typesCard, txCard),
);
root.removeAttribute("aria-busy");
root.dataset.state = "waiting";
status.textContent = "Waiting for the host…";

const heading = (id: string, text: string, extra?: Node) =>
  h("div", { class: "card-head" }, h("h2", { id }, text), extra ?? null);

const placeholder = (id: string, title: string, text: string) => [
  heading(id, title),
  h("p", { class: "muted" }, text),
];

// ---- sections -------------------------------------------------------------------------------------------

function chartWidth(card: HTMLElement): number {
  const style = getComputedStyle(card);
  const inner = card.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return Math.max(200, Math.floor(inner || 320));
}

function threshold(balance: BalanceReport): Threshold {
  return { value: balance.auto_recharge_threshold, enabled: balance.auto_recharge_enabled };
}

function renderBalance(): void {
  const b = state.balance;
  if (!b) {
    replace(balanceCard, 
      ...placeholder("balance-h", "Balance", state.errors.balance ? "Not available." : "Loading the balance…"),
    );
    return;
  }
  const p = b.pricing;
  const recharge = b.auto_recharge_enabled
    ? `On: ${fmt.usd.format(b.auto_recharge_amount_usd)} is charged when the balance drops below ${fmt.credits(b.auto_recharge_threshold)}.`
    : `Off: nothing is charged automatically (threshold ${fmt.credits(b.auto_recharge_threshold)}).`;
  const gaugeLabel =
    `Balance ${fmt.credits(b.credits_balance)}, ` +
    `${b.below_auto_recharge_threshold ? "below" : "above"} the auto-recharge threshold of ${fmt.credits(b.auto_recharge_threshold)}` +
    `${b.auto_recharge_enabled ? "" : " (auto-recharge is off)"}.`;
  replace(balanceCard, 
    heading("balance-h", "Balance"),
    h(
      "p",
      { class: "kpi" },
      h("span", { class: "kpi-value", "data-testid": "balance-credits" }, fmt.integer.format(b.credits_balance)),
      h("span", { class: "kpi-unit" }, b.credits_balance === 1 ? "credit" : "credits"),
    ),
    h("p", { class: "kpi-sub", "data-testid": "balance-usd" }, `${fmt.usd.format(b.credits_balance_usd_equivalent)} at ${fmt.usd.format(p.credit_usd)} per credit`),
    h(
      "dl",
      { class: "facts" },
      h(
        "div",
        {},
        h("dt", {}, "Static ads"),
        h("dd", {}, h("strong", { "data-testid": "static-ads" }, fmt.integer.format(b.static_ads_affordable)), h("span", { class: "per" }, `${fmt.credits(p.static_ad_credits)} each`)),
      ),
      h(
        "div",
        {},
        h("dt", {}, "Full ads"),
        h("dd", {}, h("strong", { "data-testid": "full-ads" }, fmt.integer.format(b.full_ads_affordable)), h("span", { class: "per" }, `${fmt.credits(p.full_ad_credits)} each`)),
      ),
      h(
        "div",
        {},
        h("dt", {}, "Auto-recharge"),
        h(
          "dd",
          {},
          h("span", { class: `pill ${b.auto_recharge_enabled ? "on" : "off"}`, "data-testid": "auto-recharge" }, b.auto_recharge_enabled ? "On" : "Off"),
          h("span", { class: "per" }, b.auto_recharge_enabled ? `+${fmt.usd.format(b.auto_recharge_amount_usd)}` : "manual top-ups"),
        ),
      ),
    ),
    h("figure", { class: "gauge" }, gauge(b.credits_balance, threshold(b), fmt, chartWidth(balanceCard), gaugeLabel)),
    h("p", { class: "muted small" }, recharge),
    b.below_auto_recharge_threshold
      ? h("p", { class: "note warn" }, `The balance is below the auto-recharge threshold.`)
      : null,
    activeAlerts(b),
  );
}

/** The account's active alerts the server sent with the balance (one line each), or nothing. */
function activeAlerts(b: BalanceReport): HTMLElement | null {
  const alerts = alertsOf(b);
  if (alerts.length === 0) return null;
  return h(
    "div",
    { class: "note warn account-alerts", "data-testid": "account-alerts" },
    h("p", {}, alerts.length === 1 ? "Active alert" : `${alerts.length} active alerts`),
    h("ul", {}, ...alerts.map((line) => h("li", { "data-testid": "account-alert" }, line))),
  );
}

function renderForecast(): void {
  const usage = shown();
  const forecast = usage ? forecastOf(usage) : null;
  if (!usage || !forecast) {
    forecastCard.hidden = Boolean(usage) && !forecast; // a server without the forecast: no card at all
    replace(forecastCard, ...placeholder("forecast-h", "Forecast", "Loading the usage…"));
    return;
  }
  forecastCard.hidden = false;
  if (forecast.unavailable_reason !== null || forecast.burn_rate_credits_per_day === null) {
    replace(forecastCard, 
      heading("forecast-h", "Forecast"),
      h("p", { class: "kpi-sub" }, "No estimate for this window."),
      h("p", { class: "muted", "data-testid": "forecast-reason" }, forecast.unavailable_reason ?? "Not enough data."),
    );
    return;
  }
  const rate = forecast.burn_rate_credits_per_day;
  const days = forecast.days_until_empty;
  const spread = forecastRange(forecast);
  const untilThreshold =
    state.balance && state.balance.auto_recharge_enabled
      ? daysUntilThreshold(forecast, state.balance.auto_recharge_threshold)
      : null;
  replace(forecastCard, 
    heading("forecast-h", "Forecast"),
    h(
      "p",
      { class: "kpi" },
      h("span", { class: "kpi-value", "data-testid": "forecast-days" }, days === null ? "—" : fmt.decimal.format(days)),
      h("span", { class: "kpi-unit" }, days === null ? "" : days >= 0.95 && days < 1.05 ? "day left" : "days left"),
    ),
    h(
      "p",
      { class: "kpi-sub" },
      days === null
        ? "The balance is not falling over this window."
        : `until the balance reaches zero at the current rate`,
    ),
    h(
      "dl",
      { class: "facts" },
      h("div", {}, h("dt", {}, "Net burn"), h("dd", {}, h("strong", { "data-testid": "forecast-rate" }, fmt.decimal.format(rate)), " credits/day")),
      forecast.latest_balance === null
        ? null
        : h("div", {}, h("dt", {}, "Latest balance"), h("dd", {}, h("strong", {}, fmt.integer.format(forecast.latest_balance)))),
      spread === null
        ? null
        : h(
            "div",
            {},
            h("dt", {}, "Range"),
            h(
              "dd",
              { "data-testid": "forecast-range" },
              spread.high === null
                ? `at least ${fmt.days(spread.low)}`
                : `${fmt.decimal.format(spread.low)} to ${fmt.days(spread.high)}`,
              h("span", { class: "per" }, "at the busier and quieter days' pace"),
            ),
          ),
      untilThreshold === null
        ? null
        : h("div", {}, h("dt", {}, "Auto-recharge in"), h("dd", {}, h("strong", {}, fmt.days(untilThreshold)))),
    ),
    h("p", { class: "muted small" }, forecastBasis(usage.recent_transactions.length, forecast.history_days)),
  );
}

function dataTable(caption: string, head: string[], rows: (string | number)[][]): HTMLElement {
  return h(
    "details",
    { class: "data" },
    h("summary", {}, "Show the data"),
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, caption),
        h("thead", {}, h("tr", {}, ...head.map((cell) => h("th", { scope: "col" }, cell)))),
        h("tbody", {}, ...rows.map((row) => h("tr", {}, ...row.map((cell) => h("td", {}, String(cell)))))),
      ),
    ),
  );
}

function renderCharts(): void {
  const usage = shown();
  if (!usage) {
    const text = state.errors.usage ? "Not available." : state.range !== null ? "Loading the range…" : "Loading the usage…";
    replace(historyCard, ...placeholder("history-h", "Balance over time", text));
    replace(spendCard, ...placeholder("spend-h", "Spend per day", text));
    replace(typesCard, ...placeholder("types-h", "By type", text));
    return;
  }
  const txs = usage.recent_transactions;
  const history = state.range !== null ? state.history : null;
  const spans = history ? gapSpans(history.seams, history.since, history.until) : [];
  const gapText = spanText(spans, (time) => fmt.dateTime.format(time));
  if (txs.length === 0) {
    replace(historyCard, ...placeholder("history-h", "Balance over time", "No transactions in this window."));
    replace(spendCard, ...placeholder("spend-h", "Spend per day", "No transactions in this window."));
    replace(typesCard, ...placeholder("types-h", "By type", "No transactions in this window."));
    return;
  }

  const series = balanceSeries(txs);
  const low = series.reduce((a, b) => (b.balance < a.balance ? b : a));
  const high = series.reduce((a, b) => (b.balance > a.balance ? b : a));
  const first = series[0]!;
  const last = series[series.length - 1]!;
  const historyText =
    `From ${fmt.credits(first.balance)} on ${fmt.dateTime.format(first.time)} to ${fmt.credits(last.balance)} on ` +
    `${fmt.dateTime.format(last.time)}; lowest ${fmt.integer.format(low.balance)}, highest ${fmt.integer.format(high.balance)}.` +
    (gapText ? ` ${gapText}` : "");
  const range = history ? { from: history.since, to: history.until, spans } : null;
  replace(historyCard, 
    heading("history-h", "Balance over time"),
    h(
      "figure",
      {},
      balanceChart(series, state.balance ? threshold(state.balance) : null, fmt, chartWidth(historyCard), historyText, range),
      h("figcaption", { class: "muted small", "data-testid": "history-caption" }, historyText),
    ),
    dataTable(
      "Balance after each transaction",
      ["When", "Balance"],
      series.map((p) => [fmt.dateTime.format(p.time), fmt.integer.format(p.balance)]),
    ),
  );

  const days = perDay(txs, fmt.timeZone, history ? 92 : undefined);
  const unknownDays = gapDays(spans, fmt.timeZone);
  const busiest = days.reduce((a, b) => (b.spent > a.spent ? b : a));
  const spent = days.reduce((sum, d) => sum + d.spent, 0);
  const spendText =
    `${fmt.credits(spent)} spent over ${days.length} ${days.length === 1 ? "day" : "days"}` +
    (busiest.spent > 0 ? `; most on ${fmt.day(busiest.day)} (${fmt.integer.format(busiest.spent)}).` : ".") +
    (unknownDays.size > 0 ? ` The ledger has gaps on ${unknownDays.size} ${unknownDays.size === 1 ? "day" : "days"} (shaded): they may have spent more.` : "");
  replace(spendCard, 
    heading("spend-h", "Spend per day"),
    h("figure", {}, spendChart(days, fmt, chartWidth(spendCard), spendText, unknownDays), h("figcaption", { class: "muted small", "data-testid": "spend-caption" }, spendText)),
    dataTable(
      "Credits per day",
      ["Day", "Spent", "Refunded", "Added"],
      days.map((d) => [unknownDays.has(d.day) ? `${fmt.day(d.day)} (gap)` : fmt.day(d.day), d.spent, d.refunded, d.added]),
    ),
  );

  const types = perType(txs);
  const typesText = types
    .map((t) => `${t.type}: ${t.count} (${fmt.integer.format(t.credits)} credits${t.usd ? `, ${fmt.usd.format(t.usd)}` : ""})`)
    .join("; ");
  replace(typesCard, 
    heading("types-h", "By type"),
    h("figure", {}, typeChart(types, fmt, chartWidth(typesCard), typesText)),
    h(
      "p",
      { class: "muted small" },
      `${fmt.credits(usage.summary.credits_spent)} spent, ${fmt.credits(usage.summary.credits_added)} added` +
        (usage.summary.usd_purchased ? `, ${fmt.usd.format(usage.summary.usd_purchased)} purchased.` : "."),
    ),
    dataTable(
      "Totals by transaction type",
      ["Type", "Count", "Credits", "USD"],
      types.map((t) => [t.type, t.count, t.credits, t.usd ? fmt.usd.format(t.usd) : "—"]),
    ),
  );
}

const txBody = h("tbody", {});
const txCount = h("p", { class: "muted small", "aria-live": "polite" });

function renderRows(): void {
  const usage = shown();
  if (!usage) return;
  const rows = usage.recent_transactions.filter((tx) => state.filter === "all" || tx.type === state.filter);
  replace(txBody, 
    ...rows.map((tx) =>
      h(
        "tr",
        { "data-testid": "tx-row", "data-type": tx.type },
        h("td", { "data-label": "When" }, h("time", { datetime: tx.at }, fmt.dateTime.format(Date.parse(tx.at) || 0))),
        h("td", { "data-label": "Type" }, h("span", { class: `tag type-${tx.type.toLowerCase()}` }, tx.type)),
        h("td", { "data-label": "Description", class: "desc", "data-testid": "tx-description" }, tx.description),
        h(
          "td",
          { "data-label": "Credits", class: `num ${tx.credits_delta < 0 ? "neg" : "pos"}` },
          fmt.signed(tx.credits_delta),
          tx.usd_amount ? h("span", { class: "usd" }, ` ${fmt.usd.format(tx.usd_amount)}`) : null,
        ),
        h("td", { "data-label": "Balance", class: "num" }, fmt.integer.format(tx.balance_after)),
      ),
    ),
  );
  if (rows.length === 0) {
    txBody.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, `No ${state.filter} transactions in this window.`)));
  }
  txCount.textContent = transactionsFooter(usage.note, rows.length, state.filter);
}

function renderTransactions(): void {
  const usage = shown();
  if (!usage) {
    replace(txCard, ...placeholder("tx-h", "Transactions", state.errors.usage ? "Not available." : "Loading the usage…"));
    return;
  }
  const download = h("button", { type: "button", class: "refresh", "data-testid": "download-csv" }, "Download CSV");
  download.addEventListener("click", () => void downloadCsv());
  const counts = usage.summary.count_by_type;
  const options: [Filter, string][] = [
    ["all", `All (${usage.recent_transactions.length})`],
    ...TX_TYPES.map((type): [Filter, string] => [type, `${type} (${counts[type] ?? 0})`]),
  ];
  const filter = h(
    "fieldset",
    { class: "filter" },
    h("legend", { class: "visually-hidden" }, "Show transactions of type"),
    ...options.map(([value, label]) => {
      const input = h("input", { type: "radio", name: "tx-filter", value, checked: state.filter === value });
      input.addEventListener("change", () => {
        state.filter = value;
        renderRows();
      });
      return h("label", { class: "chip" }, input, h("span", {}, label));
    }),
  );
  replace(txCard, 
    heading("tx-h", "Transactions", download),
    filter,
    h(
      "div",
      { class: "scroll", role: "region", "aria-labelledby": "tx-h", tabindex: 0 },
      h(
        "table",
        { class: "tx", "data-testid": "tx-table" },
        h("caption", { class: "visually-hidden" }, "Recent credit transactions, newest first"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, "When"),
            h("th", { scope: "col" }, "Type"),
            h("th", { scope: "col" }, "Description"),
            h("th", { scope: "col", class: "num" }, "Credits"),
            h("th", { scope: "col", class: "num" }, "Balance"),
          ),
        ),
        txBody,
      ),
    ),
    txCount,
    usage.history_complete
      ? null
      : h(
          "p",
          { class: "note" },
          state.range !== null
            ? "The ledger may be missing transactions in this range: see the gaps in the balance chart."
            : "Older transactions may exist beyond the API's window.",
        ),
    state.csv === null
      ? null
      : h(
          "details",
          { class: "data", open: true },
          h("summary", {}, "CSV of the rows shown (this host cannot download files: copy it)"),
          h("textarea", { class: "csv-text", readonly: true, "aria-label": "CSV of the rows shown", "data-testid": "csv-text" }, state.csv),
        ),
  );
  renderRows();
}

function renderAlerts(): void {
  const messages = (Object.entries(state.errors) as [Kind, string][]).map(([kind, text]) =>
    h("p", { class: "note error", role: "alert", "data-kind": kind }, text),
  );
  replace(alerts, ...messages);
}

function renderStatus(): void {
  const busy = state.loading.size > 0;
  refresh.setAttribute("aria-busy", String(busy));
  refresh.textContent = busy ? "Refreshing…" : "Refresh";
  refresh.disabled = !state.connected;
  if (busy) status.textContent = "Updating…";
  else if (state.updatedAt !== null) status.textContent = `Updated ${new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone: fmt.timeZone }).format(state.updatedAt)}`;
  const ready = Boolean(state.balance || state.usage) || Object.keys(state.errors).length > 0;
  root.dataset.state = busy ? "loading" : ready ? "ready" : state.connected ? "loading" : "waiting";
}

function renderRanges(): void {
  ranges.hidden = !(state.usage && keepsHistory(state.usage));
  if (ranges.hidden) return;
  const options: [RangeDays | null, string][] = [[null, "Latest 50"], ...RANGE_DAYS.map((d): [RangeDays, string] => [d, `${d} days`])];
  replace(ranges, 
    h("legend", { class: "visually-hidden" }, "Show the history of"),
    ...options.map(([days, label]) => {
      const input = h("input", { type: "radio", name: "range", value: String(days ?? "latest"), checked: state.range === days });
      input.addEventListener("change", () => void chooseRange(days));
      return h("label", { class: "chip", "data-testid": `range-${days ?? "latest"}` }, input, h("span", {}, label));
    }),
  );
}

function renderAll(): void {
  renderRanges();
  renderAlerts();
  renderBalance();
  renderForecast();
  renderCharts();
  renderTransactions();
  renderStatus();
}

// ---- data in --------------------------------------------------------------------------------------------

function errorText(result: ToolResult): string {
  const blocks = Array.isArray(result.content) ? (result.content as { type?: string; text?: unknown }[]) : [];
  const text = blocks.map((block) => (block.type === "text" && typeof block.text === "string" ? block.text : "")).join("\n");
  return text.split("\n")[0]?.trim() || "The tool reported an error.";
}

/** Take a tool result in; `expected` is the tool it came from when known. Returns the kind it held. */
function accept(result: ToolResult, expected: Kind | null): Kind | null {
  if (result.isError) {
    const kind = expected ?? guessKind();
    if (kind) state.errors[kind] = `${TOOL[kind]}: ${errorText(result)}`;
    return kind;
  }
  const kind = kindOf(result.structuredContent);
  if (kind === "balance") state.balance = asBalance(result.structuredContent);
  if (kind === "usage") state.usage = asUsage(result.structuredContent);
  if (kind) {
    delete state.errors[kind];
    state.updatedAt = Date.now();
  } else if (expected) {
    state.errors[expected] = `${TOOL[expected]}: the result has no data this page can show.`;
  }
  return kind;
}

function guessKind(): Kind | null {
  const name = app.getHostContext()?.toolInfo?.tool.name ?? "";
  return name.includes("usage") ? "usage" : name.includes("balance") ? "balance" : null;
}

async function load(kind: Kind): Promise<void> {
  if (state.loading.has(kind)) return;
  state.loading.add(kind);
  renderStatus();
  try {
    accept(await app.callServerTool({ name: TOOL[kind], arguments: {} }), kind);
  } catch (error) {
    state.errors[kind] = `${TOOL[kind]}: ${error instanceof Error ? error.message : String(error)}`;
  } finally {
    state.loading.delete(kind);
    renderAll();
  }
}

/** Read the last `days` days page by page (at most MAX_PAGES), newest first. */
async function loadRange(days: RangeDays): Promise<void> {
  if (state.loading.has("range")) return;
  state.loading.add("range");
  renderStatus();
  const now = Date.now();
  const args = rangeArguments(days, now);
  const pages: UsageReport[] = [];
  let cursor: string | null = null;
  try {
    do {
      const result = (await app.callServerTool({ name: TOOL.usage, arguments: cursor ? { ...args, cursor } : args })) as ToolResult;
      if (result.isError) throw new Error(errorText(result));
      const page = asUsage(result.structuredContent);
      if (!page) throw new Error("the result has no data this page can show.");
      pages.push(page);
      cursor = nextCursor(page);
    } while (cursor !== null && pages.length < MAX_PAGES);
    if (state.range === days) {
      state.history = combinePages(pages, Date.parse(args.since), now, cursor !== null);
      delete state.errors.usage;
    }
  } catch (error) {
    state.errors.usage = `${TOOL.usage}: ${error instanceof Error ? error.message : String(error)}`;
  } finally {
    state.loading.delete("range");
    renderAll();
  }
}

async function chooseRange(days: RangeDays | null): Promise<void> {
  state.range = days;
  state.history = null;
  state.csv = null;
  renderAll();
  if (days !== null) await loadRange(days);
}

/** The rows shown, as CSV, through the host: a sandboxed frame may not download by itself, and ui/download-file is
 * how the MCP Apps spec lets a view hand the host a file. A host without it gets the CSV to copy. */
async function downloadCsv(): Promise<void> {
  const usage = shown();
  if (!usage) return;
  const csv = toCsv(usage.recent_transactions);
  const history = state.range !== null ? state.history : null;
  const times = usage.recent_transactions.map((tx) => Date.parse(tx.at));
  const name = history ? csvName(history.since, history.until) : csvName(Math.min(...times), Math.max(...times));
  if (app.getHostCapabilities()?.downloadFile) {
    try {
      const result = await app.downloadFile({
        contents: [{ type: "resource", resource: { uri: `file:///${name}`, mimeType: "text/csv", text: csv } }],
      });
      if (!result.isError) {
        status.textContent = `${name} handed to the host.`;
        return;
      }
      status.textContent = "The host did not download the file; the CSV is below to copy.";
    } catch (error) {
      console.error("[dessert dashboard]", error);
    }
  }
  state.csv = csv;
  renderTransactions();
}

// ---- the host -------------------------------------------------------------------------------------------

const app = new App({ name: "dessert-mcp dashboard", version: "1.0.0" }, {}, { autoResize: true });

function applyContext(changed: Partial<McpUiHostContext>): void {
  if (changed.theme) applyDocumentTheme(changed.theme);
  if (changed.styles?.variables) applyHostStyleVariables(changed.styles.variables);
  if (changed.styles?.css?.fonts) applyHostFonts(changed.styles.css.fonts);
  const insets = changed.safeAreaInsets;
  if (insets) {
    for (const side of ["top", "right", "bottom", "left"] as const) {
      document.documentElement.style.setProperty(`--safe-${side}`, `${Math.max(0, insets[side])}px`);
    }
  }
  if ("locale" in changed || "timeZone" in changed) {
    const full = app.getHostContext() ?? {};
    fmt = new Formats({ locale: full.locale, timeZone: full.timeZone });
    renderAll();
  }
}

let connected: () => void;
const connection = new Promise<void>((resolve) => (connected = resolve));

app.ontoolinput = ({ arguments: args }) => {
  // A get_usage call for one type: start the table on that type.
  const types = (args as { types?: unknown } | undefined)?.types;
  if (Array.isArray(types) && types.length === 1 && (TX_TYPES as readonly unknown[]).includes(types[0])) {
    state.filter = types[0] as TxType;
  }
};

app.ontoolresult = async (result) => {
  const kind = accept(result as ToolResult, guessKind());
  renderAll();
  await connection;
  const missing = (["balance", "usage"] as const).filter((k) => k !== kind && !state[k]);
  await Promise.all(missing.map(load));
};

app.ontoolcancelled = ({ reason }) => {
  status.textContent = `The tool call was cancelled${reason ? `: ${reason}` : "."}`;
};

app.onhostcontextchanged = applyContext;
app.onteardown = async () => ({});
app.onerror = (error) => console.error("[dessert dashboard]", error);

refresh.addEventListener("click", () => {
  if (state.loading.size > 0 || !state.connected) return;
  void Promise.all([load("balance"), load("usage"), state.range !== null ? loadRange(state.range) : null]);
});

// Charts are drawn at the card's pixel width: redraw when the width changes (not the height: no feedback loop).
let lastWidth = 0;
new ResizeObserver(() => {
  const width = root.clientWidth;
  if (width === lastWidth) return;
  lastWidth = width;
  if (state.balance) renderBalance();
  if (shown()) renderCharts();
}).observe(root);

renderAll();
app
  .connect()
  .then(() => {
    state.connected = true;
    applyContext(app.getHostContext() ?? {});
    if (!("locale" in (app.getHostContext() ?? {}))) renderAll();
    connected();
    renderStatus();
  })
  .catch((error: unknown) => {
    status.textContent = "Could not connect to the host.";
    console.error("[dessert dashboard]", error);
  });
