import 'reflect-metadata';

export { defineChannel } from './channels.js';
export { countDead, listDead, purgeDead, retryDead, showNotification } from './dead.js';
export { dashboardHandler, startDashboard } from './dashboard/server.js';
export { startEmbeddedPostgres } from './embedded.js';
export {
  Listen,
  TriggerListen,
  PostInsertListen,
  PostUpdateListen,
  PostDeleteListen,
  PostSaveListen,
  PreInsertListen,
  PreUpdateListen,
  PreDeleteListen,
  PreSaveListen,
  Every,
  Cron,
} from './decorators.js';
export { PubSubError } from './errors.js';
export { applyMigrations } from './migrate.js';
export { generateMigration } from './generate.js';
export { notify, notifyMany, disconnect, setContext, withContext } from './notify.js';
export { traceTransaction } from './tracing.js';
export { getRegistry } from './registry.js';
export { Relay, relay } from './relay.js';
export { bridge, startBridges } from './bridge.js';
export { status, statusMonitor } from './status.js';
export { drainOnce, listen } from './worker.js';
export { Type, Transform } from 'class-transformer';
/** For plugin commands' argument parsers: commander reports it as a bad option value, with the option's name. */
export { InvalidArgumentError } from 'commander';

export type { CronOptions, ListenOptions, PublishScheduleOptions, ScheduleOptions, TriggerListenOptions, TriggerListenSpec } from './decorators.js';
export type { CatchUp } from './timing.js';
export type { DeliveryOptions } from './registry.js';
export type { RelayConfig, RelayOptions } from './relay.js';
export type { BridgeConfig, BridgeOptions, Bridges, StartBridgesOptions } from './bridge.js';
export type { DeadActionOptions, DeadFilter, DeadNotification } from './dead.js';
export type { DashboardAccess, DashboardHandler, DashboardOptions, DashboardServer } from './dashboard/server.js';
export type { DriftReport, ListenerStatus, StatusMonitor, StatusOptions, StatusReport, TriggerState, TriggerStatus, WorkerStatus } from './status.js';
export type { PubSubErrorCode } from './errors.js';
export type { NotifyOptions } from './notify.js';
export type { DrainOnceOptions, DrainSummary, Worker, WorkerOptions } from './worker.js';
export type { AttemptEvent, ClaimFailedEvent, FailedEvent, ProcessedEvent, WorkerEventName, WorkerEvents } from './observe.js';
export type { HttpOptions, Readiness } from './http.js';
export type { MetricsOptions, MetricsRegistry } from './metrics.js';
export type { GenerateOptions, GenerateResult } from './generate.js';
export type { PluginCommand, PluginConfig, PluginContext, RegisterCommands } from './cli/plugins.js';
export type {
  Channel,
  Listener,
  Logger,
  LoosePrismaClient,
  ModelField,
  ModelName,
  ModelRow,
  NotificationContext,
  PrismaAdapter,
  PrismaClientOf,
  PrismaFactory,
  Queryable,
  Register,
  TriggerOperation,
  TriggerPayload,
  TriggerTiming,
  Transaction,
} from './types.js';
export type { EmbeddedPostgres } from './embedded.js';
export type { StandardSchemaV1 } from './standard-schema.js';
