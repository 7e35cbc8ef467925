// Unit tests of the page's arithmetic: `node --test test/` (Node 22.18+ runs TypeScript as is).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  alertsOf,
  asBalance,
  asUsage,
  balanceSeries,
  dayKey,
  daysUntilThreshold,
  forecastBasis,
  forecastOf,
  kindOf,
  niceScale,
  parseTime,
  perDay,
  perType,
  transactionsFooter,
  type Transaction,
  type UsageReport,
} from "../src/model.ts";

const tx = (type: Transaction["type"], delta: number, after: number, at: string, usd: number | null = null): Transaction => ({
  type,
  credits_delta: delta,
  balance_after: after,
  usd_amount: usd,
  description: "d",
  at,
});

// The docs' example feed, newest first.
const FEED: Transaction[] = [
  tx("Deduction", -45, 205, "2026-05-19T18:24:01.000Z"),
  tx("Purchase", 250, 250, "2026-05-19T18:23:48.000Z", 25),
  tx("Bonus", 50, 50, "2026-05-12T15:08:22.000Z"),
];

test("a timestamp without an offset is read as UTC, as the server reads it", () => {
  assert.equal(parseTime("2026-05-19T18:24:01"), Date.UTC(2026, 4, 19, 18, 24, 1));
  assert.equal(parseTime("2026-05-19T20:24:01+02:00"), Date.UTC(2026, 4, 19, 18, 24, 1));
});

test("the calendar day follows the host's time zone", () => {
  assert.equal(dayKey("2026-05-19T23:30:00Z", "UTC"), "2026-05-19");
  assert.equal(dayKey("2026-05-19T23:30:00Z", "Europe/Berlin"), "2026-05-20");
  assert.equal(dayKey("2026-05-19T23:30:00Z", "Not/AZone"), "2026-05-19");
});

test("spend per day sums deductions, keeps refunds and additions apart, and fills the days between", () => {
  const days = perDay(
    [
      tx("Deduction", -10, 90, "2026-05-14T10:00:00Z"),
      tx("Refund", 5, 100, "2026-05-12T12:00:00Z"),
      tx("Deduction", -15, 95, "2026-05-12T11:00:00Z"),
      tx("Purchase", 100, 110, "2026-05-12T09:00:00Z", 10),
    ],
    "UTC",
  );
  assert.deepEqual(days, [
    { day: "2026-05-12", spent: 15, refunded: 5, added: 100 },
    { day: "2026-05-13", spent: 0, refunded: 0, added: 0 },
    { day: "2026-05-14", spent: 10, refunded: 0, added: 0 },
  ]);
});

test("a long span is not padded with empty days", () => {
  const days = perDay([tx("Deduction", -1, 1, "2026-01-01T00:00:00Z"), tx("Deduction", -1, 0, "2026-06-01T00:00:00Z")], "UTC");
  assert.deepEqual(
    days.map((d) => d.day),
    ["2026-01-01", "2026-06-01"],
  );
});

test("totals per type count and sum credits moved and USD", () => {
  assert.deepEqual(perType(FEED), [
    { type: "Deduction", count: 1, credits: 45, usd: 0 },
    { type: "Purchase", count: 1, credits: 250, usd: 25 },
    { type: "Bonus", count: 1, credits: 50, usd: 0 },
    { type: "Refund", count: 0, credits: 0, usd: 0 },
  ]);
});

test("the balance series runs oldest first, and same-second entries keep their order", () => {
  const series = balanceSeries([
    tx("Deduction", -5, 95, "2026-05-19T18:24:01Z"),
    tx("Deduction", -5, 100, "2026-05-19T18:24:01Z"),
    tx("Bonus", 105, 105, "2026-05-18T00:00:00Z"),
  ]);
  assert.deepEqual(
    series.map((p) => p.balance),
    [105, 100, 95],
  );
});

const balance = {
  credits_balance: 205,
  credits_balance_usd_equivalent: 20.5,
  credits_lifetime_purchased: 500,
  auto_recharge_enabled: true,
  auto_recharge_threshold: 20,
  auto_recharge_amount_usd: 25,
  pricing: { credit_usd: 0.1, static_ad_credits: 5, full_ad_credits: 15 },
  static_ads_affordable: 41,
  full_ads_affordable: 13,
  below_auto_recharge_threshold: false,
};

test("axis maxima are round", () => {
  assert.deepEqual(niceScale(275), { max: 300, step: 100 });
  assert.deepEqual(niceScale(85), { max: 100, step: 25 });
  assert.deepEqual(niceScale(3), { max: 3, step: 1 });
  assert.deepEqual(niceScale(0), { max: 4, step: 1 });
});

test("the results are told apart by shape, and other shapes are refused", () => {
  const usage = { recent_transactions: FEED, summary: {}, history_complete: true, note: "" };
  assert.equal(kindOf(balance), "balance");
  assert.equal(kindOf(usage), "usage");
  assert.equal(kindOf({ credits_balance: "205" }), null);
  assert.equal(asBalance({ ...balance, pricing: null }), null);
  assert.equal(asUsage({ ...usage, recent_transactions: [{ ...FEED[0], at: "yesterday" }] }), null);
  assert.equal(kindOf(null), null);
});

test("the balance's active alerts are its lines of text, none when the server sends none", () => {
  const report = asBalance(balance);
  assert.ok(report);
  assert.deepEqual(alertsOf(report), []);
  const alerted = asBalance({ ...balance, alerts: ["balance_below: 90 < 100 since 2026-05-01T00:00:00Z", 7] });
  assert.ok(alerted);
  assert.deepEqual(alertsOf(alerted), ["balance_below: 90 < 100 since 2026-05-01T00:00:00Z"]);
  assert.deepEqual(alertsOf({ ...report, alerts: "balance_below" }), []);
});

test("the forecast is read when well formed, and the days to the threshold follow from it", () => {
  const usage = (forecast: unknown) => ({ recent_transactions: [], summary: { forecast }, history_complete: true, note: "" }) as unknown as UsageReport;
  const forecast = { burn_rate_credits_per_day: 10, latest_balance: 205, days_until_empty: 20.5, unavailable_reason: null };
  assert.deepEqual(forecastOf(usage(forecast)), forecast);
  assert.equal(forecastOf(usage(undefined)), null);
  assert.equal(forecastOf(usage({ ...forecast, burn_rate_credits_per_day: "10" })), null);
  assert.equal(daysUntilThreshold(forecast, 20), 18.5);
  assert.equal(daysUntilThreshold({ ...forecast, latest_balance: 10 }, 20), null);
  assert.equal(daysUntilThreshold({ ...forecast, burn_rate_credits_per_day: -3 }, 20), null);
});

test("the transactions footer says how many are shown and in what order once, as the tool's note does", () => {
  const note = "The Dessert API returns only the last 50 transactions; 13 of the 13 it returned are shown, newest first.";
  const all = transactionsFooter(note, 13, "all");
  assert.equal(all, note);
  assert.equal(all.split("newest first").length - 1, 1);
  const filtered = transactionsFooter(note, 6, "Deduction");
  assert.equal(filtered.split("newest first").length - 1, 1);
  assert.match(filtered, /The Deduction filter keeps 6 of them\.$/);
});

test("the forecast names the window it is computed over: the transactions returned", () => {
  assert.match(forecastBasis(13), /over the 13 transactions returned/);
  assert.match(forecastBasis(1), /over the 1 transaction returned/);
});
