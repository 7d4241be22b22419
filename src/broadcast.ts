/**
 * Non-durable deliveries: a NOTIFY's payload, handed to this worker's listeners of the channel in
 * arrival order, one after another, at most once. On a durable channel a NOTIFY is only ever a
 * wake-up: whatever it carries is ignored, so that a role that can merely NOTIFY cannot forge a
 * durable (trigger) notification.
 */
import type { Dispatcher } from './dispatch.js';
import { ENVELOPE_MARK } from './notify.js';
import { nonDurablePrisma, withPrisma } from './prisma.js';
import type { Registry } from './registry.js';
import { traceProcess, withoutTrace } from './tracing.js';
import type { Logger, NotificationContext } from './types.js';

export class Broadcast {
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly registry: Registry,
    private readonly dispatcher: Dispatcher,
    private readonly filter: Record<string, unknown> | undefined,
    private readonly logger: Logger,
  ) {}

  deliver(channel: string, text: string): void {
    const def = this.registry.get(channel);
    if (!def || def.durable) return;
    this.queue = this.queue.then(async () => {
      try {
        let payload = text;
        let context: unknown;
        if (text.startsWith(ENVELOPE_MARK)) {
          const envelope = JSON.parse(text.slice(1)) as { payload: unknown; context?: unknown };
          payload = JSON.stringify(envelope.payload);
          context = envelope.context;
        } else if (def.kind === 'trigger') {
          context = (JSON.parse(text) as { context?: unknown } | null)?.context; // trigger payloads carry it inside
        }
        const stored = context;
        context = withoutTrace(context); // the trace context is ours, not the listener's
        if (!contains(context, this.filter)) return;
        const ctx: NotificationContext = withPrisma({ channel, durable: false, attempt: 0, ...(context != null && { context }) }, () => nonDurablePrisma(channel));
        for (const l of def.listeners) {
          const arg = await this.dispatcher.argument(l, payload);
          if (!arg) continue;
          if (def.kind === 'trigger' && stored !== context) replaceContext(arg.value as { context?: unknown }, context);
          await traceProcess({ channel, durable: false, listener: l.id, attempt: 1, messages: [{ context: stored }] }, () => this.dispatcher.call(l, l.delivery.batch ? [arg.value] : arg.value, ctx));
        }
      } catch (error) {
        this.logger.error(`non-durable notification on channel "${channel}" failed and is dropped (at most once):`, error);
      }
    });
  }

  /** Resolves when every delivery received so far has run. */
  settled(): Promise<void> {
    return this.queue;
  }
}

/** A trigger payload carries the context inside too: the one without the trace context, or none. */
function replaceContext(payload: { context?: unknown }, context: unknown): void {
  if (context === undefined) delete payload.context;
  else payload.context = context;
}

function contains(context: unknown, filter: Record<string, unknown> | undefined): boolean {
  if (!filter) return true;
  if (!context || typeof context !== 'object') return false;
  return Object.entries(filter).every(([k, v]) => JSON.stringify((context as Record<string, unknown>)[k]) === JSON.stringify(v));
}
