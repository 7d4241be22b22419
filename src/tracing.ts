/**
 * OpenTelemetry tracing through @opentelemetry/api, an optional peer dependency: imported dynamically
 * when this module loads, so the library installs and runs without it (then every hook here is a
 * plain call). Without a registered tracer provider the API's spans are no-ops.
 *
 * Spans follow the messaging semantic conventions: `send <channel>` (PRODUCER) around notify(), and
 * `process <channel>` (CONSUMER) around each listener attempt in the worker. The trace context travels
 * with the notification as W3C `traceparent`/`tracestate` under a reserved key of its context
 * (`TRACE_KEY`), so no schema change is needed, and triggers get it from the writer's
 * `setContext()`/`traceTransaction()` like the rest of the context. The key is taken out of the
 * context before listeners see it.
 */
import type * as Otel from '@opentelemetry/api';
import { ownError } from './attempts.js';
import { query } from './notify.js';
import { traceTransactionSql } from './sql.js';
import type { Queryable } from './types.js';

/** The context key that carries the trace context: `{"$trace": {"traceparent": "00-…", "tracestate": "…"}}`. */
export const TRACE_KEY = '$trace';

export interface TraceCarrier {
  traceparent: string;
  tracestate?: string;
}

type Api = typeof Otel;
/** undefined while loading, null when @opentelemetry/api is not installed. */
let api: Api | null | undefined;
const loading: Promise<unknown> = import('@opentelemetry/api').then(
  (m) => (api = (m as Partial<Api>).trace ? (m as Api) : null),
  () => (api = null),
);

/** What `getDelegate()` of a ProxyTracerProvider with nothing registered returns: this API's no-op provider. */
let noopProvider: unknown;

/**
 * The API when spans can be recorded: loaded (awaited by the first callers only) and a tracer provider
 * registered; else null, and the caller does no tracing work at all. With @opentelemetry/api installed
 * but no SDK registered, building attributes and a no-op span per listener call cost about a third of a
 * no-op listener's CPU. A provider registered later (or by another copy of the API) is seen on the next call.
 */
function otelNow(a: Api | null): Api | null {
  if (!a) return null;
  const provider = a.trace.getTracerProvider();
  if (!(provider instanceof a.ProxyTracerProvider)) return a;
  noopProvider ??= new a.ProxyTracerProvider().getDelegate();
  return provider.getDelegate() === noopProvider ? null : a;
}

async function otel(): Promise<Api | null> {
  if (api === undefined) await loading;
  return otelNow(api!);
}

const tracer = (a: Api) => a.trace.getTracer('pgpubsub');

/** W3C trace context of a span context, or undefined for the invalid one (nothing traced here). */
function carrierOf(a: Api, sc: Otel.SpanContext | undefined): TraceCarrier | undefined {
  if (!sc || !a.isSpanContextValid(sc)) return undefined;
  const traceparent = `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
  const tracestate = sc.traceState?.serialize();
  return tracestate ? { traceparent, tracestate } : { traceparent };
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The remote span context a stored carrier names, or undefined when it is missing or malformed. */
function spanContextOf(a: Api, carrier: unknown): Otel.SpanContext | undefined {
  const c = carrier as Partial<TraceCarrier> | null | undefined;
  const m = typeof c?.traceparent === 'string' ? TRACEPARENT.exec(c.traceparent) : null;
  if (!m || m[1] === 'ff') return undefined;
  const sc: Otel.SpanContext = { traceId: m[2]!, spanId: m[3]!, traceFlags: parseInt(m[4]!, 16), isRemote: true };
  if (typeof c!.tracestate === 'string' && c!.tracestate) sc.traceState = a.createTraceState(c!.tracestate);
  return a.isSpanContextValid(sc) ? sc : undefined;
}

/** The context to store for the active span (the caller's), as `{ $trace: … }`, or undefined when none is active. */
export async function activeTrace(): Promise<Record<string, TraceCarrier> | undefined> {
  const a = await otel();
  const carrier = a ? carrierOf(a, a.trace.getActiveSpan()?.spanContext()) : undefined;
  return carrier && { [TRACE_KEY]: carrier };
}

/**
 * Puts the active trace context into the current transaction of `client` (next to a context set with
 * `setContext()`, which it keeps), so that the notifications its triggers write are traced into their
 * listeners. Does nothing without @opentelemetry/api or an active span. Call it inside the transaction.
 */
export async function traceTransaction(client: Queryable): Promise<void> {
  const trace = await activeTrace();
  if (trace) await query(client, traceTransactionSql, [JSON.stringify(trace)]);
}

/**
 * A user's context without the trace key; undefined when nothing else is left. Anything that is not
 * a plain object is returned as it is.
 */
export function withoutTrace(context: unknown): unknown {
  if (!context || typeof context !== 'object' || Array.isArray(context) || !(TRACE_KEY in context)) return context;
  const { [TRACE_KEY]: _, ...rest } = context as Record<string, unknown>;
  return Object.keys(rest).length ? rest : undefined;
}

const common = (channel: string): Otel.Attributes => ({ 'messaging.system': 'pgpubsub', 'messaging.destination.name': channel });

/**
 * Runs `send` (one notify(), or one notifyMany() of `count` payloads) inside a `send <channel>` PRODUCER
 * span; `send` gets the trace to store with the notifications (the span's context), or undefined when
 * nothing is traced, and returns the notification ids (none for a non-durable channel).
 */
export async function traceSend<R extends Array<string | null>>(channel: string, send: (trace: Record<string, TraceCarrier> | undefined) => Promise<R>, count = 1): Promise<R> {
  const a = await otel();
  if (!a) return send(undefined);
  const attributes = { ...common(channel), 'messaging.operation.type': 'send', 'messaging.operation.name': 'send' } as Otel.Attributes;
  if (count > 1) attributes['messaging.batch.message_count'] = count;
  return tracer(a).startActiveSpan(`send ${channel}`, { kind: a.SpanKind.PRODUCER, attributes }, async (span) => {
    try {
      const carrier = carrierOf(a, span.spanContext());
      const ids = await send(carrier && { [TRACE_KEY]: carrier });
      // Only a durable notification has an id (that of its first row: each listener has its own).
      const durable = ids.some((id) => id !== null);
      span.setAttribute('pgpubsub.durable', durable);
      if (durable && count === 1) span.setAttribute('messaging.message.id', ids[0]!);
      return ids;
    } catch (error) {
      fail(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}

export interface ProcessInfo {
  channel: string;
  durable: boolean;
  /** The listener's name; undefined when every listener of the channel runs (rows stored before anyone subscribed). */
  listener?: string;
  /** From 1. */
  attempt: number;
  /** One per notification: its id (durable) and its stored context (JSON text or parsed), which may carry the trace. */
  messages: Array<{ id?: string; context: unknown }>;
}

/**
 * Runs one listener attempt inside a `process <channel>` CONSUMER span, linked to the context of each
 * notification's producer, and its child when it processes a single notification (the messaging
 * conventions' choice for single-message processing). The listener runs with the span active, so its
 * own spans and notify() calls nest under it. `failureOf` picks the failure out of the result (the
 * drain returns failures instead of throwing them); a throw is recorded too, and passed on.
 */
export async function traceProcess<R>(info: ProcessInfo, run: () => Promise<R>, failureOf: (result: R) => { error: unknown } | undefined = () => undefined): Promise<R> {
  const a = api === undefined ? await otel() : otelNow(api);
  if (!a) return run();
  const producers: Otel.SpanContext[] = [];
  for (const m of info.messages) {
    // Stored contexts come as JSON text: parsed again only when they carry a trace.
    const context = typeof m.context === 'string' ? (m.context.includes(TRACE_KEY) ? safeParse(m.context) : undefined) : m.context;
    const sc = spanContextOf(a, (context as Record<string, unknown> | null | undefined)?.[TRACE_KEY]);
    if (sc) producers.push(sc);
  }
  const attributes = { ...common(info.channel), 'messaging.operation.type': 'process', 'messaging.operation.name': 'process', 'pgpubsub.durable': info.durable, 'pgpubsub.attempt': info.attempt } as Otel.Attributes;
  if (info.listener) attributes['pgpubsub.listener'] = info.listener;
  const ids = info.messages.flatMap((m) => (m.id ? [m.id] : []));
  if (info.messages.length > 1) attributes['messaging.batch.message_count'] = info.messages.length;
  else if (ids[0]) attributes['messaging.message.id'] = ids[0];
  const parent = info.messages.length === 1 && producers[0] ? a.trace.setSpanContext(a.context.active(), producers[0]) : a.context.active();
  const options: Otel.SpanOptions = { kind: a.SpanKind.CONSUMER, attributes, links: producers.map((context) => ({ context })) };
  return tracer(a).startActiveSpan(`process ${info.channel}`, options, parent, async (span) => {
    try {
      const result = await run();
      const failure = failureOf(result);
      if (failure) fail(span, failure.error);
      return result;
    } catch (error) {
      fail(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}

/** Status ERROR and an exception event with what the listener threw (not our wrapper naming it). */
function fail(span: Otel.Span, error: unknown): void {
  const own = ownError(error);
  const exception = own instanceof Error ? own : { message: String(own) };
  span.recordException(exception);
  span.setStatus({ code: 2 /* SpanStatusCode.ERROR */, message: exception.message });
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
