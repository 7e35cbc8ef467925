// The charts: inline SVG drawn at the container's pixel width (so text stays legible from 320 px up), coloured
// by CSS classes (so a theme change needs no redraw). Each is an image with a title and a description; the
// figure around it adds a sentence and a data table for people who do not see it.

import { s } from "./dom.ts";
import type { Formats } from "./format.ts";
import { segments, type Span } from "./history.ts";
import { type BalancePoint, type DayTotal, niceScale, type TypeTotal } from "./model.ts";

let ids = 0;
const nextId = (prefix: string) => `${prefix}-${++ids}`;
const r = (value: number) => Math.round(value * 10) / 10;

function frame(width: number, height: number, title: string, description: string): SVGSVGElement {
  const titleId = nextId("chart-title");
  const descId = nextId("chart-desc");
  return s(
    "svg",
    {
      class: "chart",
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": `${titleId} ${descId}`,
      focusable: "false",
    },
    s("title", { id: titleId }, title),
    s("desc", { id: descId }, description),
  );
}

function yAxis(svg: SVGSVGElement, fmt: Formats, max: number, step: number, y: (v: number) => number, x0: number, x1: number) {
  const axis = s("g", { class: "axis", "aria-hidden": "true" });
  for (let value = 0; value <= max + 1e-9; value += step) {
    axis.append(
      s("line", { class: "grid", x1: x0, x2: x1, y1: r(y(value)), y2: r(y(value)) }),
      s("text", { x: x0 - 6, y: r(y(value)), dy: "0.32em", "text-anchor": "end" }, fmt.integer.format(value)),
    );
  }
  svg.append(axis);
}

export interface Threshold {
  value: number;
  enabled: boolean;
}

/** A time axis wider than the points, and the spans the ledger does not know (kept history's range). */
export interface Range {
  from: number;
  to: number;
  spans: readonly Span[];
}

/** The balance after each transaction as a step line, with the auto-recharge threshold. Over a `range`, the line
 * stops at each span the ledger does not know, which is shaded instead. */
export function balanceChart(
  points: readonly BalancePoint[],
  threshold: Threshold | null,
  fmt: Formats,
  width: number,
  description: string,
  range: Range | null = null,
): SVGSVGElement {
  const height = 190;
  const margin = { top: 14, right: 14, bottom: 26, left: 46 };
  const svg = frame(width, height, "Balance over time", description);
  const top = Math.max(...points.map((p) => p.balance), threshold?.value ?? 0, 1);
  const { max, step } = niceScale(top);
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const t0 = range?.from ?? points[0]?.time ?? 0;
  const t1 = range?.to ?? points[points.length - 1]?.time ?? 0;
  const x = (time: number) => margin.left + (t1 === t0 ? plotW / 2 : ((time - t0) / (t1 - t0)) * plotW);
  const y = (value: number) => margin.top + plotH - (Math.max(0, value) / max) * plotH;
  yAxis(svg, fmt, max, step, y, margin.left, width - margin.right);

  const spans = range?.spans ?? [];
  if (spans.length > 0) {
    const shaded = s("g", { class: "gaps", "aria-hidden": "true" });
    for (const span of spans) {
      const x0 = r(x(span.from));
      shaded.append(
        s("rect", { class: `gap ${span.kind}`, "data-kind": span.kind, x: x0, y: margin.top, width: Math.max(1, r(x(span.to)) - x0), height: plotH }),
      );
    }
    svg.append(shaded);
  }
  for (const run of segments(points, spans)) {
    let line = `M${r(x(run[0]!.time))},${r(y(run[0]!.balance))}`;
    for (const point of run.slice(1)) line += `H${r(x(point.time))}V${r(y(point.balance))}`;
    const area = `${line}V${r(y(0))}H${r(x(run[0]!.time))}Z`;
    svg.append(s("path", { class: "area", d: area }), s("path", { class: "line", d: line }));
  }
  if (threshold) {
    const ty = r(y(threshold.value));
    const label = `Auto-recharge ${threshold.enabled ? "below" : "(off)"} ${fmt.integer.format(threshold.value)}`;
    svg.append(
      s(
        "g",
        { class: `threshold${threshold.enabled ? "" : " off"}`, "aria-hidden": "true" },
        s("line", { x1: margin.left, x2: width - margin.right, y1: ty, y2: ty }),
        s("text", { x: margin.left + 6, y: ty - 6, "text-anchor": "start" }, label),
      ),
    );
  }
  const dots = s("g", { class: "dots" });
  for (const point of points) {
    dots.append(
      s(
        "circle",
        { cx: r(x(point.time)), cy: r(y(point.balance)), r: 3 },
        s("title", {}, `${fmt.dateTime.format(point.time)}: ${fmt.credits(point.balance)}`),
      ),
    );
  }
  svg.append(dots);
  if (points.length > 0) {
    const labels = s("g", { class: "axis", "aria-hidden": "true" });
    const base = height - margin.bottom + 17;
    labels.append(s("text", { x: margin.left, y: base, "text-anchor": "start" }, fmt.shortDay.format(t0)));
    if (t1 !== t0) {
      labels.append(s("text", { x: width - margin.right, y: base, "text-anchor": "end" }, fmt.shortDay.format(t1)));
    }
    svg.append(labels);
  }
  return svg;
}

/** Credits spent per calendar day, as bars; a day the ledger has a gap in (`unknown`) is shaded, its bar a lower
 * bound. */
export function spendChart(
  days: readonly DayTotal[],
  fmt: Formats,
  width: number,
  description: string,
  unknown: ReadonlySet<string> = new Set(),
): SVGSVGElement {
  const height = 170;
  const margin = { top: 18, right: 8, bottom: 26, left: 46 };
  const svg = frame(width, height, "Credits spent per day", description);
  const { max, step } = niceScale(Math.max(1, ...days.map((d) => d.spent)));
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const y = (value: number) => margin.top + plotH - (value / max) * plotH;
  yAxis(svg, fmt, max, step, y, margin.left, width - margin.right);
  const slot = plotW / Math.max(days.length, 1);
  const barW = Math.max(2, Math.min(40, slot * 0.7));
  const labelEvery = Math.max(1, Math.ceil(48 / slot));
  const shaded = s("g", { class: "gaps", "aria-hidden": "true" });
  const bars = s("g", { class: "bars" });
  const labels = s("g", { class: "axis", "aria-hidden": "true" });
  days.forEach((day, i) => {
    const cx = margin.left + slot * (i + 0.5);
    const top = y(day.spent);
    const gap = unknown.has(day.day);
    if (gap) shaded.append(s("rect", { class: "gap", x: r(cx - slot / 2), y: margin.top, width: r(slot), height: plotH }));
    const text =
      `${fmt.day(day.day)}: ${gap ? "at least " : ""}${fmt.credits(day.spent)} spent` +
      `${day.refunded ? `, ${fmt.integer.format(day.refunded)} refunded` : ""}${gap ? " (the ledger has a gap this day)" : ""}`;
    bars.append(
      s(
        "rect",
        { x: r(cx - barW / 2), y: r(top), width: r(barW), height: r(y(0) - top), rx: Math.min(3, barW / 4) },
        s("title", {}, text),
      ),
    );
    if (day.spent > 0 && barW >= 20) {
      labels.append(s("text", { class: "value", x: r(cx), y: r(top - 5), "text-anchor": "middle" }, fmt.integer.format(day.spent)));
    }
    if (i % labelEvery === 0) {
      labels.append(s("text", { x: r(cx), y: height - margin.bottom + 17, "text-anchor": "middle" }, fmt.day(day.day)));
    }
  });
  svg.append(shaded, bars, labels);
  return svg;
}

/** Credits moved per transaction type, as horizontal bars. */
export function typeChart(types: readonly TypeTotal[], fmt: Formats, width: number, description: string): SVGSVGElement {
  const row = 30;
  const labelW = Math.min(130, Math.max(96, width * 0.28));
  const valueW = 92;
  const height = types.length * row + 4;
  const svg = frame(width, height, "Credits by transaction type", description);
  const max = Math.max(1, ...types.map((t) => t.credits));
  const barMax = Math.max(10, width - labelW - valueW - 8);
  types.forEach((total, i) => {
    const cy = i * row + row / 2 + 2;
    const barW = total.credits > 0 ? Math.max(2, (total.credits / max) * barMax) : 0;
    const sign = total.type === "Deduction" ? "−" : "+";
    svg.append(
      s(
        "g",
        { class: `type type-${total.type.toLowerCase()}` },
        s("text", { class: "label", x: 0, y: cy, dy: "0.32em" }, `${total.type} (${total.count})`),
        s("rect", { class: "track", x: labelW, y: cy - 7, width: r(barMax), height: 14, rx: 3 }),
        s("rect", { class: "bar", x: labelW, y: cy - 7, width: r(barW), height: 14, rx: 3 }),
        s(
          "text",
          { class: "value", x: width, y: cy, dy: "0.32em", "text-anchor": "end" },
          total.credits ? `${sign}${fmt.integer.format(total.credits)}` : "0",
        ),
      ),
    );
  });
  return svg;
}

/** The balance against the auto-recharge threshold, on one bar. */
export function gauge(balance: number, threshold: Threshold, fmt: Formats, width: number, label: string): SVGSVGElement {
  const height = 44;
  const svg = frame(width, height, "Balance and auto-recharge threshold", label);
  const { max } = niceScale(Math.max(balance, threshold.value * 2, 1), 4);
  const x = (value: number) => r((Math.max(0, Math.min(value, max)) / max) * width);
  const low = balance < threshold.value;
  svg.append(
    s("rect", { class: "track", x: 0, y: 6, width, height: 12, rx: 6 }),
    s("rect", { class: `fill${low ? " low" : ""}`, x: 0, y: 6, width: x(balance), height: 12, rx: 6 }),
  );
  const tx = x(threshold.value);
  const anchor = tx < 60 ? "start" : tx > width - 60 ? "end" : "middle";
  svg.append(
    s(
      "g",
      { class: `threshold${threshold.enabled ? "" : " off"}`, "aria-hidden": "true" },
      s("line", { x1: tx, x2: tx, y1: 1, y2: 23 }),
      s("text", { x: tx, y: 38, "text-anchor": anchor }, `recharge ${threshold.enabled ? "below" : "off:"} ${fmt.integer.format(threshold.value)}`),
    ),
  );
  return svg;
}
