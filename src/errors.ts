/** The one error type of pgpubsub: a stable `code` to branch on, and a message that says how to fix it. */

export type PubSubErrorCode =
  | 'pubsub.invalidChannel'
  | 'pubsub.missingParamType'
  | 'pubsub.duplicateListener'
  | 'pubsub.channelConflict'
  | 'pubsub.payloadTooLarge'
  | 'pubsub.invalidPayload'
  | 'pubsub.noListenersLoaded'
  | 'pubsub.unknownChannel'
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
  | 'pubsub.missingDependency';

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
