// Unit tests of kept history as the page reads it: `node --test test/`.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  combinePages,
  csvName,
  gapDays,
  gapSpans,
  keepsHistory,
  MAX_PAGES,
  nextCursor,
  rangeArguments,
  type Seam,
  segments,
  spanText,
  toCsv,
} from "../src/history.ts";
import { balanceSeries, forecastBasis, forecastOf, forecastRange, type Transaction, type UsageReport } from "../src/model.ts";

const tx = (type: Transaction["type"], delta: number, after: number, at: string, description = "d"): Transaction => ({
  type,
  credits_delta: delta,
  balance_after: after,
  usd_amount: type === "Purchase" ? 25 : null,
  description,
  at,
});

const page = (rows: Transaction[], seams: Seam[], complete: boolean, cursor: string | null = null): UsageReport =>
  ({
    recent_transactions: rows,
    summary: {
      credits_spent: 0,
      credits_added: 0,
      usd_purchased: 0,
      count_by_type: { Deduction: 0, Purchase: 0, Bonus: 0, Refund: 0 },
      oldest_at: null,
      newest_at: null,
      forecast: null,
    },
    history_complete: complete,
    seams,
    next_cursor: cursor,
    note: "n",
  }) as UsageReport;

const T = (hour: number) => `2026-05-19T${String(hour).padStart(2, "0")}:00:00.000Z`;
const ms = (hour: number) => Date.parse(T(hour));

test("a result with seams and pages comes from a server that keeps history; the API's own answer does not", () => {
  assert.equal(keepsHistory(page([], [], true)), true);
  const plain = { recent_transactions: [], summary: page([], [], true).summary, history_complete: true, note: "n" };
  assert.equal(keepsHistory(plain as UsageReport), false);
  assert.equal(nextCursor(page([], [], true, "abc")), "abc");
  assert.equal(nextCursor(page([], [], true, "")), null);
});

test("a range asks for the last N days up to now, 50 rows a page", () => {
  const now = Date.UTC(2026, 4, 19, 12);
  assert.deepEqual(rangeArguments(7, now), { since: "2026-05-12T12:00:00.000Z", until: "2026-05-19T12:00:00.000Z", limit: 50 });
});

test("pages combine into one range: every row, each seam once, complete only when every page is and none was left", () => {
  const gap: Seam = { kind: "gap", after: T(2), before: T(5) };
  const first = page([tx("Deduction", -10, 90, T(7)), tx("Purchase", 100, 100, T(6))], [gap], false, "c1");
  const second = page([tx("Deduction", -5, 5, T(2))], [gap], false);
  const range = combinePages([first, second], ms(0), ms(8), false);
  assert.equal(range.transactions.length, 3);
  assert.deepEqual(range.seams, [gap]);
  assert.equal(range.complete, false);
  assert.equal(range.usage.summary.credits_spent, 15);
  assert.equal(range.usage.summary.credits_added, 100);
  assert.equal(range.usage.summary.usd_purchased, 25);
  assert.equal(range.usage.summary.count_by_type.Deduction, 2);
  assert.equal(range.usage.summary.oldest_at, T(2));
  assert.equal(combinePages([page([], [], true)], 0, 1, false).complete, true);
  const cut = combinePages([page([], [], true)], 0, 1, true);
  assert.equal(cut.complete, false);
  assert.match(cut.usage.note, new RegExp(`newest ${MAX_PAGES} pages`));
});

test("a seam becomes the span between the rows on either side of it, an open end reaching the range's edge", () => {
  const seams: Seam[] = [
    { kind: "unverified", after: T(4), before: T(6) },
    { kind: "gap", after: null, before: T(2) },
    { kind: "gap", after: T(7), before: null },
  ];
  assert.deepEqual(gapSpans(seams, ms(1), ms(8)), [
    { kind: "gap", from: ms(1), to: ms(2) },
    { kind: "unverified", from: ms(4), to: ms(6) },
    { kind: "gap", from: ms(7), to: ms(8) },
  ]);
  assert.deepEqual(gapSpans([{ kind: "gap", after: null, before: T(2) }], ms(3), ms(8)), []); // outside the range
});

test("the balance line is cut wherever a span lies between two points, and only there", () => {
  const points = balanceSeries([
    tx("Deduction", -1, 96, T(7)),
    tx("Deduction", -1, 97, T(6)),
    tx("Deduction", -1, 98, T(4)),
    tx("Deduction", -1, 99, T(3)),
  ]);
  const runs = segments(points, [{ kind: "gap", from: ms(4), to: ms(6) }]);
  assert.deepEqual(
    runs.map((run) => run.map((p) => p.balance)),
    [
      [99, 98],
      [97, 96],
    ],
  );
  assert.equal(segments(points, []).length, 1);
  assert.equal(segments(points, [{ kind: "gap", from: ms(0), to: ms(3) }]).length, 1); // before the first point
});

test("every calendar day a span touches is marked, in the host's time zone", () => {
  const span = { kind: "gap" as const, from: Date.parse("2026-05-17T22:00:00Z"), to: Date.parse("2026-05-19T01:00:00Z") };
  assert.deepEqual([...gapDays([span])], ["2026-05-17", "2026-05-18", "2026-05-19"]);
  assert.deepEqual([...gapDays([span], "Asia/Tokyo")], ["2026-05-18", "2026-05-19"]);
  assert.equal(gapDays([]).size, 0);
});

test("the spans are said in words for people who do not see the chart", () => {
  assert.equal(spanText([], String), "");
  const text = spanText([{ kind: "gap", from: 1, to: 2 }], (t) => `t${t}`);
  assert.match(text, /not drawn where the ledger does not know/);
  assert.match(text, /from t1 to t2, a gap/);
});

test("the CSV holds every row oldest first, quotes what needs quoting, and defuses spreadsheet formulas", () => {
  const csv = toCsv([
    tx("Deduction", -45, 205, T(9), 'API ad "x", twice'),
    tx("Bonus", 50, 250, T(8), "=HYPERLINK(\"http://evil\")"),
  ]);
  const lines = csv.split("\r\n");
  assert.equal(lines[0], "at,type,credits_delta,balance_after,usd_amount,description");
  assert.equal(lines[1], `${T(8)},Bonus,50,250,,"'=HYPERLINK(""http://evil"")"`);
  assert.equal(lines[2], `${T(9)},Deduction,-45,205,,"API ad ""x"", twice"`);
  assert.equal(lines[3], "");
  assert.equal(lines.length, 4);
  assert.equal(csvName(Date.UTC(2026, 4, 12, 8), Date.UTC(2026, 4, 19, 8)), "dessert-usage-2026-05-12-to-2026-05-19.csv");
});

test("the forecast's range and basis are the tools': whole days of kept history and the busier-to-quieter days", () => {
  const usage = page([], [], true);
  const forecast = forecastOf({
    ...usage,
    summary: {
      ...usage.summary,
      forecast: {
          burn_rate_credits_per_day: 10,
          latest_balance: 100,
          days_until_empty: 10,
          unavailable_reason: null,
          days_until_empty_low: 8,
          days_until_empty_high: 14,
        history_days: 6,
      },
    },
  });
  assert.ok(forecast);
  assert.deepEqual(forecastRange(forecast), { low: 8, high: 14 });
  assert.match(forecastBasis(50, forecast.history_days), /over 6 whole days of kept history/);
  assert.equal(forecastRange({ ...forecast, days_until_empty_low: null }), null);
  assert.deepEqual(forecastRange({ ...forecast, days_until_empty_high: null }), { low: 8, high: null });
});
