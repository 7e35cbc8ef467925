// Number and date formatting in the host's locale and time zone (host context), with safe fallbacks.

export interface Locale {
  locale: string | undefined;
  timeZone: string | undefined;
}

function safe<T>(make: () => T, fallback: () => T): T {
  try {
    return make();
  } catch {
    return fallback();
  }
}

export class Formats {
  readonly integer: Intl.NumberFormat;
  readonly decimal: Intl.NumberFormat;
  readonly usd: Intl.NumberFormat;
  readonly dateTime: Intl.DateTimeFormat;
  readonly shortDay: Intl.DateTimeFormat;
  readonly timeZone: string | undefined;

  constructor({ locale, timeZone }: Locale) {
    const zone = safe(
      () => new Intl.DateTimeFormat(undefined, { timeZone }).resolvedOptions().timeZone,
      () => "UTC",
    );
    this.timeZone = zone;
    const number = (options: Intl.NumberFormatOptions) =>
      safe(
        () => new Intl.NumberFormat(locale, options),
        () => new Intl.NumberFormat("en-US", options),
      );
    const date = (options: Intl.DateTimeFormatOptions) =>
      safe(
        () => new Intl.DateTimeFormat(locale, { ...options, timeZone: zone }),
        () => new Intl.DateTimeFormat("en-US", { ...options, timeZone: zone }),
      );
    this.integer = number({ maximumFractionDigits: 0 });
    this.decimal = number({ maximumFractionDigits: 1 });
    this.usd = number({ style: "currency", currency: "USD" });
    this.dateTime = date({ month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
    this.shortDay = date({ month: "short", day: "numeric" });
  }

  credits(value: number): string {
    return `${this.integer.format(value)} ${Math.abs(value) === 1 ? "credit" : "credits"}`;
  }

  signed(value: number): string {
    return value > 0 ? `+${this.integer.format(value)}` : this.integer.format(value).replace("-", "−");
  }

  /** "2026-05-19" as a short day in the page's locale (the key is already in the host's time zone). */
  day(key: string): string {
    const [year, month, day] = key.split("-").map(Number) as [number, number, number];
    return safe(
      () => new Intl.DateTimeFormat(this.shortDay.resolvedOptions().locale, { month: "short", day: "numeric", timeZone: "UTC" }).format(Date.UTC(year, month - 1, day)),
      () => key,
    );
  }

  days(value: number): string {
    if (value < 1) return "less than a day";
    return `${this.decimal.format(value)} ${value < 1.05 ? "day" : "days"}`;
  }
}
