// Compile-time checks of typed models, against the fixture's client registered in register.ts. Each
// `@ts-expect-error` must meet an error: tsc fails on one that does not (test/unit/typed-models.test.ts).
import {
  PostDeleteListen,
  PostInsertListen,
  PostSaveListen,
  PostUpdateListen,
  PreDeleteListen,
  PreInsertListen,
  PreSaveListen,
  PreUpdateListen,
  TriggerListen,
  type ModelField,
  type ModelName,
  type ModelRow,
  type TriggerPayload,
} from 'pgpubsub';
import type { ModelsOf } from '../../src/types.js';
import type { Account, Everything, Prisma, PrismaClient } from '../fixtures/generated/prisma/client.js';
import type { PrismaClient as TypedClient } from '../fixtures/generated/typed/client.js';
import type { JsonValue } from '@prisma/client/runtime/client';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const same = <A, B>(ok: Equal<A, B>) => ok;

// Model names are the schema's: not the camelCase delegate, not the @@map'ped table.
same<ModelName, 'Everything' | 'Account' | 'Membership' | 'Article'>(true);
same<keyof ModelsOf<TypedClient>, 'order_line' | 'Shipment'>(true);
same<ModelsOf<TypedClient>['Shipment'], { id: number; shippedAt: Date }>(true);

// An extended client has the same models; its computed fields are not in the table, so not in the rows.
declare const prisma: PrismaClient;
const extended = prisma.$extends({ result: { account: { label: { needs: { name: true }, compute: (a) => a.name.toUpperCase() } } } });
same<ModelsOf<typeof extended>['Account'], Account>(true);

// Rows say what the worker decodes: bigint, Prisma's Decimal, Date, Uint8Array, enums as string unions.
same<ModelRow<'Everything'>, Everything>(true);
same<ModelRow<'Everything'>['big'], bigint>(true);
same<ModelRow<'Everything'>['dec'], Prisma.Decimal>(true);
same<ModelRow<'Everything'>['at'], Date>(true);
same<ModelRow<'Everything'>['day'], Date | null>(true);
same<ModelRow<'Everything'>['bytes'], Uint8Array<ArrayBuffer> | null>(true);
same<ModelRow<'Everything'>['json'], JsonValue>(true);
same<ModelRow<'Everything'>['mood'], 'HAPPY' | 'SAD'>(true);
same<ModelRow<'Everything'>['bigs'], bigint[]>(true);
same<ModelField<'Account'>, 'code' | 'name' | 'balance'>(true); // field names, not the @map'ped columns

// The operation decides which images exist.
same<TriggerPayload<'Account', 'INSERT'>['old'], null>(true);
same<TriggerPayload<'Account', 'INSERT'>['new'], Account>(true);
same<TriggerPayload<'Account', 'DELETE'>['new'], null>(true);
same<TriggerPayload<'Account', 'INSERT' | 'UPDATE'>['old'], Account | null>(true);
same<TriggerPayload<'Account'>['new'], Account | null>(true);
same<TriggerPayload<Account, 'UPDATE'>['old'], Account>(true);

export class Names {
  @PostInsertListen('Account')
  @PostUpdateListen('Account')
  @PostDeleteListen('Account')
  @PostSaveListen('Account')
  @PreInsertListen('Account')
  @PreUpdateListen('Account')
  @PreDeleteListen('Account')
  @PreSaveListen('Account')
  @TriggerListen({ model: 'Account', when: 'AFTER', events: ['INSERT'] })
  any(_p: TriggerPayload<'Account'>) {}

  // @ts-expect-error a typo
  @PostInsertListen('Acount')
  // @ts-expect-error the delegate's name
  @PostUpdateListen('account')
  // @ts-expect-error the @@map'ped table
  @PostDeleteListen('accounts')
  // @ts-expect-error
  @PostSaveListen('Acount')
  // @ts-expect-error
  @PreInsertListen('Acount')
  // @ts-expect-error
  @PreUpdateListen('Acount')
  // @ts-expect-error
  @PreDeleteListen('Acount')
  // @ts-expect-error
  @PreSaveListen('Acount')
  typo(_p: TriggerPayload) {}

  // @ts-expect-error
  @TriggerListen({ model: 'Acount', when: 'AFTER', events: ['INSERT'] })
  triggerTypo(_p: TriggerPayload) {}
}

export class Payloads {
  @PostInsertListen('Account')
  inserted(p: TriggerPayload<'Account', 'INSERT'>) {
    same<typeof p.new.code, string>(true); // no `!`: an INSERT always has the new row
  }

  @PostInsertListen('Account')
  asRow(_p: TriggerPayload<Account>) {}

  @PostUpdateListen('Account')
  asPick(_p: TriggerPayload<Pick<Account, 'code'>, 'UPDATE'>) {}

  // @ts-expect-error code is a string in the schema
  @PostInsertListen('Account')
  wrongField(_p: TriggerPayload<{ code: number }>) {}

  // @ts-expect-error another model's rows
  @PostInsertListen('Account')
  wrongModel(_p: TriggerPayload<'Article'>) {}

  // @ts-expect-error a save may be an UPDATE
  @PostSaveListen('Account')
  narrower(_p: TriggerPayload<'Account', 'INSERT'>) {}

  @TriggerListen({ model: 'Account', when: 'AFTER', events: ['UPDATE', 'DELETE'] })
  updatedOrDeleted(p: TriggerPayload<'Account', 'UPDATE' | 'DELETE'>) {
    same<typeof p.old, Account>(true);
    same<typeof p.new, Account | null>(true);
  }

  @PostInsertListen('Account', { batch: { size: 10 } })
  batched(_p: TriggerPayload<'Account', 'INSERT'>[]) {}

  // @ts-expect-error batch listeners take an array
  @PostInsertListen('Account', { batch: { size: 10 } })
  notAnArray(_p: TriggerPayload<'Account', 'INSERT'>) {}

  @PostInsertListen('Account', { ordered: true, orderKey: (p) => p.new.code })
  ordered(_p: TriggerPayload<'Account'>) {}

  // @ts-expect-error orderKey sees the payload the listener gets: here only the key and `name`
  @PostUpdateListen('Account', { select: ['name'], ordered: true, orderKey: (p) => p.new.balance.toFixed() })
  orderedPartial(_p: TriggerPayload<'Account', 'UPDATE', Partial<Account>>) {}
}

export class Selections {
  @PostUpdateListen('Account', { select: ['name'] })
  selected(p: TriggerPayload<'Account', 'UPDATE', { name: string; code?: string; balance?: number }>) {
    same<typeof p.new.name, string>(true);
  }

  // @ts-expect-error only the selected fields (and the key) arrive
  @PostUpdateListen('Account', { select: ['name'] })
  selectedWhole(_p: TriggerPayload<'Account'>) {}

  @PostUpdateListen('Account', { select: '*', durable: false })
  everything(_p: TriggerPayload<'Account'>) {}

  // @ts-expect-error non-durable channels send only the key unless `select` says otherwise
  @PostUpdateListen('Account', { durable: false })
  keyOnly(_p: TriggerPayload<'Account'>) {}

  // @ts-expect-error not a field of Account
  @PostUpdateListen('Account', { select: ['nmae'] })
  selectTypo(_p: TriggerPayload) {}
}

export class Columns {
  @PostUpdateListen('Account', { columns: ['balance'] })
  @PostSaveListen('Account', { columns: ['balance'] })
  @PreUpdateListen('Account', { columns: ['balance'] })
  @PreSaveListen('Account', { columns: ['balance'] })
  @TriggerListen({ model: 'Account', when: 'AFTER', events: ['UPDATE'], columns: ['balance'] })
  ok(_p: TriggerPayload<'Account'>) {}

  // @ts-expect-error not a field of Account
  @PostUpdateListen('Account', { columns: ['balanse'] })
  // @ts-expect-error the @map'ped column, not the field
  @PreUpdateListen('Account', { columns: ['display name'] })
  typo(_p: TriggerPayload<'Account'>) {}

  // @ts-expect-error columns need UPDATE
  @PostInsertListen('Account', { columns: ['balance'] })
  // @ts-expect-error
  @PostDeleteListen('Account', { columns: ['balance'] })
  // @ts-expect-error
  @PreInsertListen('Account', { columns: ['balance'] })
  // @ts-expect-error
  @PreDeleteListen('Account', { columns: ['balance'] })
  // @ts-expect-error
  @TriggerListen({ model: 'Account', when: 'AFTER', events: ['INSERT'], columns: ['balance'] })
  noUpdate(_p: TriggerPayload<'Account'>) {}
}
