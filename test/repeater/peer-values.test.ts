// Unit tests of src/repeater/peer-values.ts: what \a \A \u \g \U \G expand to for a TCP client and
// for a real UNIX-socket client of this process (SO_PEERCRED through the peercred addon).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { Cleanup, tempDir } from '../helpers/harness.ts';
import { groupName, peerValues, valuesUsed } from '../../src/repeater/peer-values.ts';
import { parseTemplate } from '../../src/repeater/escapes.ts';
import type { TemplateValue } from '../../src/repeater/types.ts';

const ALL: TemplateValue[] = ['peer-address', 'peer-address-port', 'user-id', 'group-id', 'user-name', 'group-name'];

test('valuesUsed: the value escapes of a template, inside conditionals too', () => {
  assert.deepEqual([...valuesUsed(parseTemplate('GET /\\a HTTP/1.0').parts)], ['peer-address']);
  assert.deepEqual([...valuesUsed(parseTemplate('X \\?1\\U\\:\\G\\/ \\n').parts)].sort(), ['group-name', 'user-name']);
  assert.equal(valuesUsed(parseTemplate('CONNECT host:22 HTTP/1.0').parts).size, 0);
});

test('peerValues, TCP client: numbers with -n; loopback stays numeric in \\A with the tcp service name; no credentials', async () => {
  assert.deepEqual(await peerValues(new Set(ALL), { kind: 'inet', address: '127.0.0.1', port: 22 }, true), {
    'peer-address': '127.0.0.1',
    'peer-address-port': '127.0.0.1:22',
    'user-id': '',
    'group-id': '',
    'user-name': '',
    'group-name': '',
  });
  const named = await peerValues(new Set(ALL), { kind: 'inet', address: '127.0.0.1', port: 22, ident: 'alice' }, false);
  assert.equal(named['peer-address-port'], '127.0.0.1:ssh');
  assert.equal(named['user-name'], 'alice', '\\U is the ident answer on a TCP listener');
  assert.match(named['peer-address'] ?? '', /\S/);
  assert.deepEqual(await peerValues(new Set(), { kind: 'inet', address: '127.0.0.1', port: 1 }, false), {});
});

test('peerValues, UNIX-socket client: this machine\'s name (localhost with -n), unix:, and the uid/gid/names of the connecting process', async (t) => {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const path = join(tempDir(cleanup, 'ws-peer-'), 's.sock');
  const accepted = new Promise<net.Socket>((resolve) => {
    const server = net.createServer(resolve);
    server.listen(path);
    cleanup.add(() => new Promise<void>((r) => server.close(() => r())));
  });
  const client = net.connect({ path });
  cleanup.add(() => client.destroy());
  const socket = await accepted;
  cleanup.add(() => socket.destroy());
  const uid = process.getuid?.() ?? -1;
  const gid = process.getgid?.() ?? -1;
  const v = await peerValues(new Set(ALL), { kind: 'unix', socket }, false);
  assert.equal(v['peer-address'], os.hostname());
  assert.equal(v['peer-address-port'], 'unix:');
  assert.equal(v['user-id'], String(uid));
  assert.equal(v['group-id'], String(gid));
  assert.equal(v['user-name'], os.userInfo().username);
  assert.equal(v['group-name'], groupName(gid));
  assert.equal((await peerValues(new Set(['peer-address'] as TemplateValue[]), { kind: 'unix', socket }, true))['peer-address'], 'localhost');
});

test('groupName: getent group, undefined for an unknown or invalid gid', () => {
  assert.equal(groupName(0), 'root');
  assert.equal(groupName(-1), undefined);
  assert.equal(groupName(4_242_424), undefined);
});

test('identShown: stone takes what follows the last colon of the identd reply, leading blanks skipped', async () => {
  const { identShown } = await import('../../src/repeater/ident-lookup.ts');
  assert.equal(identShown('4000 , 80 : USERID : UNIX : alice'), 'alice');
  assert.equal(identShown('4000 , 80 : ERROR : NO-USER'), 'NO-USER');
  assert.equal(identShown('4000 , 80 : USERID : OTHER : a:b'), 'b');
  assert.equal(identShown('no colon at all'), '');
});
