/** The one error type of pgpubsub: a stable `code` to branch on, and a message that says how to fix it. */

export type PubSubErrorCode =
  | 'pubsub.invalidChannel'
  | 'pubsub.invalidSchedule'
  | 'pubsub.missingParamType'
  | 'pubsub.duplicateListener'
  | 'pubsub.channelConflict'
  | 'pubsub.payloadTooLarge'
  | 'pubsub.invalidPayload'
  | 'pubsub.noListenersLoaded'
  | 'pubsub.unknownChannel'
  | 'pubsub.unknownModel'
  | 'pubsub.schema'
  | 'pubsub.schemaMissing'
  | 'pubsub.migrationDrift'
  | 'pubsub.migrationFailed'
  | 'pubsub.migrationState'
  | 'pubsub.config'
  | 'pubsub.invalidCondition'
  | 'pubsub.invalidClient'
  | 'pubsub.transactionAborted'
  | 'pubsub.listenerTimeout'
  | 'pubsub.drainFailed'
  | 'pubsub.missingDependency'
  | 'pubsub.plugin'
  | 'pubsub.brokerUnavailable'
  | 'pubsub.relayNotConfirmed';

export class PubSubError extends Error {
  readonly code: PubSubErrorCode;
  /** Exit code the CLI uses for this error. */
  readonly exitCode: number;

  constructor(code: PubSubErrorCode, message: string, options?: { cause?: unknown; exitCode?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PubSubError';
    this.code = code;
    this.exitCode = options?.exitCode ?? 1;
  }
}

/** Edit distance between two short names: insertions, deletions, substitutions and swaps of neighbours. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/** The known name that `name` most likely misspells (ignoring case, about one letter in four differs), if any. */
export function closestName(name: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(name.length / 4)) + 1;
  for (const candidate of known) {
    const d = distance(candidate.toLowerCase(), name.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best;
}
