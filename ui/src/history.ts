// Kept history as the page reads it: a 7 / 30 / 90-day range read page by page through get_usage, the seams
// where the ledger does not know what happened, and the range as CSV. No DOM here (test/history.test.ts).

import { type BalancePoint, dayKey, parseTime, perType, type Transaction, TX_TYPES, type UsageReport } from "./model.ts";

export const RANGE_DAYS = [7, 30, 90] as const;
export type RangeDays = (typeof RANGE_DAYS)[number];

/** Pages of 50 rows read for one range at most: the page stays responsive and the host is not flooded. */
export const MAX_PAGES = 40;

const DAY_MS = 86_400_000;

export type SeamKind = "gap" | "unverified" | "ambiguous" | "conflict";

/** get_usage's seam: transactions may be missing between `after` and `before` (null: no end known). */
export interface Seam {
  kind: SeamKind;
  after: string | null;
  before: string | null;
}

/** A time span the ledger does not know, in milliseconds, clipped to the shown range. */
export interface Span {
  kind: SeamKind;
  from: number;
  to: number;
}

const SEAM_KINDS: readonly string[] = ["gap", "unverified", "ambiguous", "conflict"];

const isSeam = (value: unknown): value is Seam => {
  if (typeof value !== "object" || value === null) return false;
  const { kind, after, before } = value as Record<string, unknown>;
  const end = (v: unknown) => v === null || (typeof v === "string" && !Number.isNaN(parseTime(v)));
  return SEAM_KINDS.includes(kind as string) && end(after) && end(before);
};

/** Whether the server keeps history: its get_usage result lists seams and pages (a server with the ledger off
 * answers from the API's last 50 rows only, and the range choice would promise what it cannot give). */
export function keepsHistory(usage: UsageReport): boolean {
  const value = usage as unknown as Record<string, unknown>;
  return Array.isArray(value.seams) && "next_cursor" in value;
}

/** The seams of a result, the malformed ones left out. */
export function seamsOf(usage: UsageReport): Seam[] {
  const seams = (usage as unknown as { seams?: unknown }).seams;
  return Array.isArray(seams) ? seams.filter(isSeam) : [];
}

export function nextCursor(usage: UsageReport): string | null {
  const cursor = (usage as unknown as { next_cursor?: unknown }).next_cursor;
  return typeof cursor === "string" && cursor.length > 0 ? cursor : null;
}

/** get_usage's arguments for the last `days` days before `now` (ms). */
export function rangeArguments(days: RangeDays, now: number): { since: string; until: string; limit: number } {
  return { since: new Date(now - days * DAY_MS).toISOString(), until: new Date(now).toISOString(), limit: 50 };
}

/** One range read page by page: every page's rows (newest first), the seams once each, complete only when every
 * page says so, and whether pages were left unread (`truncated`). The first page's forecast is kept: the server
 * computes it from the kept history, the same on every page. */
export interface RangeReport {
  since: number;
  until: number;
  transactions: Transaction[];
  seams: Seam[];
  complete: boolean;
  truncated: boolean;
  usage: UsageReport;
}

export function combinePages(pages: readonly UsageReport[], since: number, until: number, truncated: boolean): RangeReport {
  const transactions = pages.flatMap((page) => page.recent_transactions);
  const seen = new Set<string>();
  const seams: Seam[] = [];
  for (const seam of pages.flatMap(seamsOf)) {
    const key = `${seam.kind}|${seam.after}|${seam.before}`;
    if (!seen.has(key)) seams.push(seam);
    seen.add(key);
  }
  const complete = pages.length > 0 && pages.every((page) => page.history_complete) && !truncated;
  const first = pages[0];
  const counts = Object.fromEntries(TX_TYPES.map((type) => [type, 0])) as Record<Transaction["type"], number>;
  for (const total of perType(transactions)) counts[total.type] = total.count;
  const spent = transactions.reduce((sum, tx) => sum + Math.max(0, -tx.credits_delta), 0);
  const added = transactions.reduce((sum, tx) => sum + Math.max(0, tx.credits_delta), 0);
  const usd = transactions.reduce((sum, tx) => sum + (tx.type === "Purchase" ? (tx.usd_amount ?? 0) : 0), 0);
  const times = transactions.map((tx) => tx.at).sort((a, b) => parseTime(a) - parseTime(b));
  const usage: UsageReport = {
    recent_transactions: transactions,
    summary: {
      credits_spent: spent,
      credits_added: added,
      usd_purchased: Math.round(usd * 100) / 100,
      count_by_type: counts,
      oldest_at: times[0] ?? null,
      newest_at: times[times.length - 1] ?? null,
      forecast: first?.summary.forecast ?? null,
    },
    history_complete: complete,
    note: rangeNote(transactions.length, truncated),
  };
  return { since, until, transactions, seams, complete, truncated, usage };
}

function rangeNote(rows: number, truncated: boolean): string {
  const shown = `${rows} ${rows === 1 ? "transaction" : "transactions"} of kept history, newest first.`;
  return truncated ? `${shown} The range holds more: only the newest ${MAX_PAGES} pages were read.` : shown;
}

/** The spans in [since, until] the ledger does not know: each seam's open interval between the transactions on
 * either side of it, an open end reaching the edge of the range. */
export function gapSpans(seams: readonly Seam[], since: number, until: number): Span[] {
  return seams
    .map((seam) => ({
      kind: seam.kind,
      from: Math.max(since, seam.after === null ? since : parseTime(seam.after)),
      to: Math.min(until, seam.before === null ? until : parseTime(seam.before)),
    }))
    .filter((span) => span.to > span.from)
    .sort((a, b) => a.from - b.from);
}

/** The balance line cut at every span: consecutive points with a span between them are not joined, because the
 * ledger does not know what the balance did there. */
export function segments(points: readonly BalancePoint[], spans: readonly Span[]): BalancePoint[][] {
  const runs: BalancePoint[][] = [];
  let run: BalancePoint[] = [];
  for (const point of points) {
    const previous = run[run.length - 1];
    if (previous && spans.some((span) => span.from < point.time && span.to > previous.time)) {
      runs.push(run);
      run = [];
    }
    run.push(point);
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

/** The calendar days (YYYY-MM-DD in `timeZone`) a span touches: their totals may lack transactions. */
export function gapDays(spans: readonly Span[], timeZone?: string): Set<string> {
  const days = new Set<string>();
  for (const span of spans) {
    const last = dayKey(new Date(span.to).toISOString(), timeZone);
    for (let time = span.from; ; time += DAY_MS) {
      const day = dayKey(new Date(Math.min(time, span.to)).toISOString(), timeZone);
      days.add(day);
      if (day >= last || time >= span.to) break;
    }
  }
  return days;
}

const KIND_TEXT: Record<SeamKind, string> = {
  gap: "a gap: transactions may be missing",
  unverified: "an unverified seam: the balance adds up but no shared row proves nothing is missing",
  ambiguous: "an ambiguous seam: identical rows leave the placement open",
  conflict: "a conflict: the rows disagree with kept history",
};

/** One sentence per span, for people who do not see the chart. */
export function spanText(spans: readonly Span[], when: (time: number) => string): string {
  if (spans.length === 0) return "";
  const parts = spans.map((span) => `from ${when(span.from)} to ${when(span.to)}, ${KIND_TEXT[span.kind]}`);
  return `The line is not drawn where the ledger does not know the balance: ${parts.join("; ")}.`;
}

const CSV_COLUMNS = ["at", "type", "credits_delta", "balance_after", "usd_amount", "description"] as const;

function csvField(value: string | number | null): string {
  if (value === null) return "";
  let text = String(value);
  // Upstream text opened in a spreadsheet must not run as a formula.
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** The rows as CSV (RFC 4180, CRLF line ends), oldest first, with a header line. */
export function toCsv(transactions: readonly Transaction[]): string {
  const rows = transactions
    .map((tx, index) => ({ tx, index, time: parseTime(tx.at) }))
    .sort((a, b) => a.time - b.time || b.index - a.index)
    .map(({ tx }) => CSV_COLUMNS.map((column) => csvField(tx[column] ?? null)).join(","));
  return [CSV_COLUMNS.join(","), ...rows].map((line) => `${line}\r\n`).join("");
}

/** The file name for a range: dessert-usage-<first day>-to-<last day>.csv (UTC days). */
export function csvName(since: number, until: number): string {
  const day = (time: number) => new Date(time).toISOString().slice(0, 10);
  return `dessert-usage-${day(since)}-to-${day(until)}.csv`;
}
