import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePrismaSchema } from '../../src/prisma-schema.js';

const schema = `
// a comment with a { brace
datasource db { provider = "postgresql" }
enum Role { ADMIN USER }
model User {
  id        String   @id @default(uuid()) @map("user_id") // "quoted" comment
  email     String   @unique
  role      Role     @default(USER)
  big       BigInt?
  tags      String[]
  url       String   @default("http://x//y")
  posts     Post[]
  geom      Unsupported("geometry")?
  secret    String   @ignore
  @@map("app_users")
  @@schema("auth")
}
model Post {
  authorId String
  slug     String
  author   User @relation(fields: [authorId], references: [id])
  @@id([authorId, slug(sort: Desc)])
}
model Hidden {
  id Int @id
  @@ignore
}
`;

test('models, tables, columns, types and primary keys come from the schema', () => {
  const models = parsePrismaSchema(schema);
  assert.deepEqual([...models.keys()], ['User', 'Post']);
  const user = models.get('User')!;
  assert.equal(user.table, 'app_users');
  assert.equal(user.schema, 'auth');
  assert.deepEqual(user.primaryKey, ['id']);
  assert.deepEqual(
    user.fields.map((f) => [f.name, f.column, f.type, f.kind, f.list, f.optional]),
    [
      ['id', 'user_id', 'String', 'scalar', false, false],
      ['email', 'email', 'String', 'scalar', false, false],
      ['role', 'role', 'Role', 'enum', false, false],
      ['big', 'big', 'BigInt', 'scalar', false, true],
      ['tags', 'tags', 'String', 'scalar', true, false],
      ['url', 'url', 'String', 'scalar', false, false],
      ['geom', 'geom', 'Unsupported', 'unsupported', false, true],
    ],
  );
  assert.deepEqual(models.get('Post')!.primaryKey, ['authorId', 'slug']);
  assert.equal(models.get('Post')!.table, 'Post');
});
