// The tools' structured results as the page reads them, and the pure arithmetic behind the charts.
// No DOM here: test/model.test.ts runs these under Node.

export type TxType = "Deduction" | "Purchase" | "Bonus" | "Refund";
export const TX_TYPES: readonly TxType[] = ["Deduction", "Purchase", "Bonus", "Refund"];

export interface Pricing {
  credit_usd: number;
  static_ad_credits: number;
  full_ad_credits: number;
}

/** dessert.get_balance's structuredContent (BalanceReport). */
export interface BalanceReport {
  credits_balance: number;
  credits_balance_usd_equivalent: number;
  credits_lifetime_purchased: number;
  auto_recharge_enabled: boolean;
  auto_recharge_threshold: number;
  auto_recharge_amount_usd: number;
  pricing: Pricing;
  static_ads_affordable: number;
  full_ads_affordable: number;
  below_auto_recharge_threshold: boolean;
  /** The account's active alerts, one line each (servers with the ledger on; absent before alerts existed). */
  alerts?: unknown;
}

export interface Transaction {
  type: TxType;
  credits_delta: number;
  balance_after: number;
  usd_amount: number | null;
  description: string;
  at: string;
}

/** summary.forecast, when the server computes one. */
export interface Forecast {
  burn_rate_credits_per_day: number | null;
  latest_balance: number | null;
  days_until_empty: number | null;
  unavailable_reason: string | null;
  /** With kept history: days left at the busier days' pace, and at the quieter days' pace (null: none). */
  days_until_empty_low?: number | null;
  days_until_empty_high?: number | null;
  /** Complete days of kept history the rate comes from; null: from the returned transactions. */
  history_days?: number | null;
}

export interface UsageSummary {
  credits_spent: number;
  credits_added: number;
  usd_purchased: number;
  count_by_type: Record<TxType, number>;
  oldest_at: string | null;
  newest_at: string | null;
  forecast?: Forecast | null;
}

/** dessert.get_usage's structuredContent (UsageReport). */
export interface UsageReport {
  recent_transactions: Transaction[];
  summary: UsageSummary;
  history_complete: boolean;
  note: string;
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);
const isNumber = (value: unknown): value is number => typeof value === "number" && Number.isFinite(value);
const isNumberOrNull = (value: unknown): value is number | null => value === null || isNumber(value);

/** A BalanceReport, or null when `value` is not one (another tool's result, an error, a future shape). */
export function asBalance(value: unknown): BalanceReport | null {
  if (!isObject(value) || !isObject(value.pricing)) return null;
  const numbers = [
    value.credits_balance,
    value.credits_balance_usd_equivalent,
    value.auto_recharge_threshold,
    value.auto_recharge_amount_usd,
    value.static_ads_affordable,
    value.full_ads_affordable,
    value.pricing.static_ad_credits,
    value.pricing.full_ad_credits,
  ];
  if (!numbers.every(isNumber) || typeof value.auto_recharge_enabled !== "boolean") return null;
  return value as unknown as BalanceReport;
}

/** The balance's active alerts, one line each: none from a server without alerts, and no line that is not text. */
export function alertsOf(balance: BalanceReport): string[] {
  return Array.isArray(balance.alerts) ? balance.alerts.filter((line): line is string => typeof line === "string") : [];
}

function isTransaction(value: unknown): value is Transaction {
  return (
    isObject(value) &&
    (TX_TYPES as readonly unknown[]).includes(value.type) &&
    isNumber(value.credits_delta) &&
    isNumber(value.balance_after) &&
    (value.usd_amount === undefined || isNumberOrNull(value.usd_amount)) &&
    typeof value.description === "string" &&
    typeof value.at === "string" &&
    !Number.isNaN(parseTime(value.at))
  );
}

/** A UsageReport, or null when `value` is not one. */
export function asUsage(value: unknown): UsageReport | null {
  if (!isObject(value) || !Array.isArray(value.recent_transactions) || !isObject(value.summary)) return null;
  if (!value.recent_transactions.every(isTransaction)) return null;
  return value as unknown as UsageReport;
}

/** The forecast, when the summary carries a well-formed one. */
export function forecastOf(usage: UsageReport): Forecast | null {
  const forecast: unknown = usage.summary.forecast;
  if (!isObject(forecast)) return null;
  const { burn_rate_credits_per_day, latest_balance, days_until_empty, unavailable_reason } = forecast;
  if (![burn_rate_credits_per_day, latest_balance, days_until_empty].every(isNumberOrNull)) return null;
  const optional = [forecast.days_until_empty_low, forecast.days_until_empty_high, forecast.history_days];
  if (!optional.every((value) => value === undefined || isNumberOrNull(value))) return null;
  if (unavailable_reason !== null && typeof unavailable_reason !== "string") return null;
  return forecast as unknown as Forecast;
}

const HAS_OFFSET = /(?:[zZ]|[+-]\d\d(?::?\d\d)?)$/;

/** Milliseconds since the epoch; a timestamp without an offset is UTC, as the server reads it. */
export function parseTime(at: string): number {
  return Date.parse(HAS_OFFSET.test(at) ? at : `${at}Z`);
}

const DAY_MS = 86_400_000;

function dayFormatter(timeZone: string | undefined): Intl.DateTimeFormat {
  try {
    return new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" });
  } catch {
    return new Intl.DateTimeFormat("en-CA", { timeZone: "UTC", year: "numeric", month: "2-digit", day: "2-digit" });
  }
}

/** The calendar day (YYYY-MM-DD) of `at` in `timeZone` (the host's; UTC when it is unknown or invalid). */
export function dayKey(at: string, timeZone?: string): string {
  return dayFormatter(timeZone ?? "UTC").format(parseTime(at));
}

export interface DayTotal {
  day: string;
  /** Credits taken (negative deltas), as a positive number. */
  spent: number;
  /** Credits refunded that day (Refund deltas). */
  refunded: number;
  /** Credits added by purchases and bonuses. */
  added: number;
}

function nextDay(day: string): string {
  return new Date(Date.parse(`${day}T00:00:00Z`) + DAY_MS).toISOString().slice(0, 10);
}

/**
 * Credits per calendar day, oldest first. Days without transactions between the first and the last are filled
 * with zeros while the span is at most `fillUpTo` days, so the bars sit on a true time axis.
 */
export function perDay(transactions: readonly Transaction[], timeZone?: string, fillUpTo = 62): DayTotal[] {
  const days = new Map<string, DayTotal>();
  const format = dayFormatter(timeZone ?? "UTC");
  for (const tx of transactions) {
    const day = format.format(parseTime(tx.at));
    const total = days.get(day) ?? { day, spent: 0, refunded: 0, added: 0 };
    if (tx.credits_delta < 0) total.spent -= tx.credits_delta;
    else if (tx.type === "Refund") total.refunded += tx.credits_delta;
    else total.added += tx.credits_delta;
    days.set(day, total);
  }
  const sorted = [...days.values()].sort((a, b) => (a.day < b.day ? -1 : a.day > b.day ? 1 : 0));
  if (sorted.length < 2) return sorted;
  const first = sorted[0]!.day;
  const last = sorted[sorted.length - 1]!.day;
  const span = Math.round((Date.parse(`${last}T00:00:00Z`) - Date.parse(`${first}T00:00:00Z`)) / DAY_MS) + 1;
  if (span > fillUpTo) return sorted;
  const filled: DayTotal[] = [];
  for (let day = first; day <= last; day = nextDay(day)) {
    filled.push(days.get(day) ?? { day, spent: 0, refunded: 0, added: 0 });
  }
  return filled;
}

export interface TypeTotal {
  type: TxType;
  count: number;
  /** Sum of |credits_delta|. */
  credits: number;
  usd: number;
}

/** Count, credits moved and USD per transaction type, in the API's type order. */
export function perType(transactions: readonly Transaction[]): TypeTotal[] {
  const totals = new Map<TxType, TypeTotal>(TX_TYPES.map((type) => [type, { type, count: 0, credits: 0, usd: 0 }]));
  for (const tx of transactions) {
    const total = totals.get(tx.type)!;
    total.count += 1;
    total.credits += Math.abs(tx.credits_delta);
    total.usd += tx.usd_amount ?? 0;
  }
  return [...totals.values()];
}

export interface BalancePoint {
  time: number;
  balance: number;
  at: string;
}

/** The balance after each transaction, oldest first (ties keep the feed's order, which is newest first). */
export function balanceSeries(transactions: readonly Transaction[]): BalancePoint[] {
  return transactions
    .map((tx, index) => ({ time: parseTime(tx.at), balance: tx.balance_after, at: tx.at, index }))
    .sort((a, b) => a.time - b.time || b.index - a.index)
    .map(({ time, balance, at }) => ({ time, balance, at }));
}

/** A round axis maximum at or above `value` (1, 2, 2.5, 5 times a power of ten), and its tick step. */
export function niceScale(value: number, ticks = 4): { max: number; step: number } {
  if (!(value > 0)) return { max: ticks, step: 1 };
  const raw = value / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  const rounded = Math.max(1, Math.round(step * 1e6) / 1e6);
  return { max: Math.ceil(value / rounded) * rounded, step: rounded };
}

/** Days until the balance falls below the auto-recharge threshold at the forecast's burn rate, if it will. */
export function daysUntilThreshold(forecast: Forecast, threshold: number): number | null {
  const rate = forecast.burn_rate_credits_per_day;
  const balance = forecast.latest_balance;
  if (rate === null || balance === null || rate <= 0 || balance < threshold) return null;
  return (balance - threshold) / rate;
}

/** Which tool a structuredContent came from, by its shape. */
export function kindOf(structured: unknown): "balance" | "usage" | null {
  if (asBalance(structured)) return "balance";
  if (asUsage(structured)) return "usage";
  return null;
}

/** The line under the transactions table. The tool's note already says how many are shown and in what order, so
 * it is not said again; a type filter adds how many of them it keeps. */
export function transactionsFooter(note: string, shown: number, filter: string): string {
  if (filter === "all") return note;
  return `${note} The ${filter} filter keeps ${shown} of them.`;
}

/** What the forecast is computed over, worded as `dessert-mcp demo` words it, so the page and the demo give one
 * number for one tool result: whole days of kept history when the server has them, else the transactions
 * get_usage returned. */
export function forecastBasis(returned: number, historyDays?: number | null): string {
  if (historyDays) {
    return `Net spend per day over ${historyDays} whole ${historyDays === 1 ? "day" : "days"} of kept history; an estimate, not a promise.`;
  }
  return `Deductions net of refunds over the ${returned} ${returned === 1 ? "transaction" : "transactions"} returned, oldest to newest; an estimate, not a promise.`;
}

/** The forecast's range in days, as the tools give it (busier pace to quieter pace), or null without one. */
export function forecastRange(forecast: Forecast): { low: number; high: number | null } | null {
  const low = forecast.days_until_empty_low;
  if (low === undefined || low === null) return null;
  return { low, high: forecast.days_until_empty_high ?? null };
}
