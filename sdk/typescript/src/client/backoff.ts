/**
 * Reconnection delays: exponential back-off with jitter (SPEC.md §5.6). The first attempt
 * comes after a random delay in [0, initial], well within the server's grace window so that
 * the session is resumed; attempt n after one in [c/2, c] with c = min(max, initial × 2^n).
 */

export interface BackoffOptions {
  /** Upper bound of the first delay, and the base of the exponent. Default 200 ms. */
  initialDelayMs: number;
  /** The cap. Default 30 s. */
  maxDelayMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialDelayMs: 200, maxDelayMs: 30_000 };

/** The delay before the attempt that follows `failedAttempts` failures. */
export function reconnectDelay(options: BackoffOptions, failedAttempts: number, random: () => number = Math.random): number {
  const cap = Math.min(options.maxDelayMs, options.initialDelayMs * 2 ** Math.min(failedAttempts, 20));
  const low = failedAttempts === 0 ? 0 : cap / 2;
  return Math.round(low + random() * (cap - low));
}

/** After GOAWAY: uniform in [r, 2r] from its receipt (§4.9). */
export function goawayDelay(reconnectAfterMs: number, random: () => number = Math.random): number {
  return Math.round(reconnectAfterMs * (1 + random()));
}
