/**
 * Standard Schema (https://standardschema.dev), the interface zod ≥ 3.24, valibot ≥ 1 and arktype
 * implement under `~standard`. The spec is types only and asks libraries to copy it rather than depend
 * on a package: this is its v1 interface as published, plus the two helpers pgpubsub needs.
 */
import { PubSubError } from './errors.js';

/** The Standard Schema interface. */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  /** The Standard Schema properties. */
  readonly '~standard': StandardSchemaV1.Props<Input, Output>;
}

// eslint-disable-next-line @typescript-eslint/no-namespace
export declare namespace StandardSchemaV1 {
  /** The Standard Schema properties interface. */
  export interface Props<Input = unknown, Output = Input> {
    /** The version number of the standard. */
    readonly version: 1;
    /** The vendor name of the schema library. */
    readonly vendor: string;
    /** Validates unknown input values. */
    readonly validate: (value: unknown) => Result<Output> | Promise<Result<Output>>;
    /** Inferred types associated with the schema. */
    readonly types?: Types<Input, Output> | undefined;
  }

  /** The result interface of the validate function. */
  export type Result<Output> = SuccessResult<Output> | FailureResult;

  /** The result interface if validation succeeds. */
  export interface SuccessResult<Output> {
    /** The typed output value. */
    readonly value: Output;
    /** The non-existent issues. */
    readonly issues?: undefined;
  }

  /** The result interface if validation fails. */
  export interface FailureResult {
    /** The issues of failed validation. */
    readonly issues: ReadonlyArray<Issue>;
  }

  /** The issue interface of the failure output. */
  export interface Issue {
    /** The error message of the issue. */
    readonly message: string;
    /** The path of the issue, if any. */
    readonly path?: ReadonlyArray<PropertyKey | PathSegment> | undefined;
  }

  /** The path segment interface of the issue. */
  export interface PathSegment {
    /** The key representing a path segment. */
    readonly key: PropertyKey;
  }

  /** The Standard Schema types interface. */
  export interface Types<Input = unknown, Output = Input> {
    /** The input type of the schema. */
    readonly input: Input;
    /** The output type of the schema. */
    readonly output: Output;
  }

  /** Infers the input type of a Standard Schema. */
  export type InferInput<Schema extends StandardSchemaV1> = NonNullable<Schema['~standard']['types']>['input'];

  /** Infers the output type of a Standard Schema. */
  export type InferOutput<Schema extends StandardSchemaV1> = NonNullable<Schema['~standard']['types']>['output'];
}

/** Whether `value` is a Standard Schema (an object, or a function as arktype's types are, with `~standard` v1). */
export function isStandardSchema(value: unknown): value is StandardSchemaV1 {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return false;
  const props = (value as { '~standard'?: { version?: unknown; validate?: unknown } })['~standard'];
  return !!props && props.version === 1 && typeof props.validate === 'function';
}

/** At most this many issues are listed in a message (a hostile payload may have thousands). */
const MAX_ISSUES = 10;

/** `a.b[2]`-style path of an issue, or `(root)`. */
function issuePath(issue: StandardSchemaV1.Issue): string {
  let out = '';
  for (const segment of issue.path ?? []) {
    const key = typeof segment === 'object' && segment !== null ? segment.key : segment;
    out += typeof key === 'number' ? `[${key}]` : typeof key === 'string' && /^[A-Za-z_$][\w$]*$/.test(key) ? `${out ? '.' : ''}${key}` : `[${JSON.stringify(String(key)).slice(0, 42)}]`;
  }
  return out || '(root)';
}

/** The issues as lines for an error message: `  - path: message`, at most MAX_ISSUES of them. */
export function formatIssues(issues: ReadonlyArray<StandardSchemaV1.Issue>): string {
  const lines = issues.slice(0, MAX_ISSUES).map((i) => `  - ${issuePath(i)}: ${String(i.message).slice(0, 300)}`);
  if (issues.length > MAX_ISSUES) lines.push(`  … and ${issues.length - MAX_ISSUES} more`);
  return lines.join('\n');
}

/** A payload the schema refused, with its issues. */
export class SchemaRejection extends PubSubError {
  constructor(
    message: string,
    readonly issues: ReadonlyArray<StandardSchemaV1.Issue>,
    /**
     * The validator answered synchronously: such validators are pure checks of the value, so the same
     * stored bytes will fail again and a retry cannot help (the worker dead-letters at once). An async
     * validator may consult something that changes (a refinement that queries a service), so its
     * rejection is retried like any failure.
     */
    readonly permanent: boolean,
  ) {
    super('pubsub.invalidPayload', message);
  }
}

/**
 * Runs the schema; resolves to its output or rejects with SchemaRejection (`where` starts the message,
 * `fix` ends it). A validator that throws instead of returning issues is reported as such.
 */
export async function validate<S extends StandardSchemaV1>(schema: S, value: unknown, where: string, fix: string): Promise<StandardSchemaV1.InferOutput<S>> {
  let result: StandardSchemaV1.Result<unknown>;
  let sync = true;
  try {
    const answer = schema['~standard'].validate(value);
    sync = typeof (answer as { then?: unknown }).then !== 'function';
    result = await answer;
  } catch (cause) {
    throw new PubSubError('pubsub.invalidPayload', `${where}: the ${schema['~standard'].vendor} schema threw instead of returning issues: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
  if (result.issues) throw new SchemaRejection(`${where}: the payload does not match the channel's ${schema['~standard'].vendor} schema:\n${formatIssues(result.issues)}\n${fix}`, result.issues, sync);
  return result.value as StandardSchemaV1.InferOutput<S>;
}
