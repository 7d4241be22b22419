/**
 * pgpubsub as a Nest module: `PubSubModule.forRoot(options)` runs the worker with the application and
 * provides `PubSub` to publish from services. Listener classes are ordinary providers: the worker asks
 * Nest's container for them, so their constructors get other providers injected.
 */
import { Inject, Injectable, Logger, Module, type BeforeApplicationShutdown, type DynamicModule, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { PubSubError, disconnect, getRegistry, listen, notify, type Channel, type NotifyOptions, type Worker, type WorkerOptions } from 'pgpubsub';

/** `listen()`'s options (`databaseUrl` is the worker's: `PubSub.notify()` uses DATABASE_URL or the `client` it is given). */
export interface PubSubModuleOptions extends Omit<WorkerOptions, 'instance'> {
  /** false: this process only publishes (e.g. a web server, with the worker in another deployment). @defaultValue true */
  worker?: boolean;
}

const OPTIONS = Symbol('PubSubModuleOptions');

/** Publishes from services. Without `options.client` it uses a pool on DATABASE_URL (closed with the app). */
@Injectable()
export class PubSub {
  notify<T>(channel: Channel<T>, payload: T, options?: NotifyOptions): Promise<string | undefined> {
    return notify(channel, payload, options);
  }
}

/** Starts the worker once every provider is ready; stops it before providers release their resources. */
@Injectable()
class PubSubLifecycle implements OnApplicationBootstrap, BeforeApplicationShutdown, OnApplicationShutdown {
  private readonly logger = new Logger('PubSub');
  private worker?: Worker;

  constructor(
    @Inject(OPTIONS) private readonly options: PubSubModuleOptions,
    private readonly moduleRef: ModuleRef,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    const { worker, ...workerOptions } = this.options;
    if (worker === false) return;
    const instances = this.listenerInstances();
    this.worker = await listen({
      logger: { info: (m) => this.logger.log(m), warn: (m) => this.logger.warn(m), error: (m, e) => this.logger.error(m, e instanceof Error ? e.stack : e) },
      ...workerOptions,
      instance: (cls) => instances.get(cls)!,
    });
  }

  /**
   * Resolves every listener class now, so that a class missing from the providers stops the start
   * with a clear message instead of failing each of its notifications until they are dead-lettered.
   */
  private listenerInstances(): Map<Function, object> {
    const served = new Set(this.options.channels ?? getRegistry().list().map((c) => c.name));
    const instances = new Map<Function, object>();
    for (const channel of getRegistry().list()) {
      if (!served.has(channel.name)) continue;
      for (const listener of channel.listeners) {
        if (typeof listener.target === 'function') continue; // a static method needs no instance
        const cls = listener.target.constructor;
        if (instances.has(cls)) continue;
        try {
          instances.set(cls, this.moduleRef.get(cls, { strict: false }));
        } catch (cause) {
          throw new PubSubError(
            'pubsub.config',
            `${listener.id} listens on "${channel.name}", but ${cls.name} is not a provider Nest can resolve: add it to the providers of a module the application imports (default scope; request-scoped and transient providers cannot receive notifications). Nest said: ${(cause as Error).message}`,
            { cause },
          );
        }
      }
    }
    return instances;
  }

  /**
   * Nest calls this after every onModuleDestroy and before any onApplicationShutdown: running listeners
   * finish here, so providers they use should release their resources in onApplicationShutdown.
   */
  async beforeApplicationShutdown(): Promise<void> {
    if (!this.worker) return;
    await this.worker.close();
    this.worker = undefined;
    this.logger.log('worker stopped');
  }

  /** Last: the publishing pool, once an HTTP server (closed before this hook) can no longer call notify(). */
  async onApplicationShutdown(): Promise<void> {
    await disconnect();
  }
}

@Module({})
export class PubSubModule {
  static forRoot(options: PubSubModuleOptions = {}): DynamicModule {
    return {
      module: PubSubModule,
      global: true,
      providers: [{ provide: OPTIONS, useValue: options }, PubSub, PubSubLifecycle],
      exports: [PubSub],
    };
  }
}
