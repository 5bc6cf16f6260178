import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseExpose, loadAgentConfig, checkUnique } from '../../src/agent/expose.ts';
import { Cleanup, tempDir } from '../helpers/harness.ts';

const cleanup = new Cleanup();
after(() => cleanup.run());
const dir = tempDir(cleanup);

function config(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

test('--expose NAME=HOST:PORT', () => {
  assert.deepEqual(parseExpose('web=127.0.0.1:80'), { name: 'web', target: { host: '127.0.0.1', port: 80 } });
  assert.deepEqual(parseExpose('v6=[::1]:22'), { name: 'v6', target: { host: '::1', port: 22 } });
  assert.throws(() => parseExpose('web'), /expected NAME=HOST:PORT/);
  assert.throws(() => parseExpose('we b=h:1'), /whitespace/);
  assert.throws(() => checkUnique([parseExpose('a=h:1'), parseExpose('a=h:2')]), /exposed twice/);
});

test('YAML config is read', () => {
  const path = config('ok.yaml', 'identity: /x/agent.pem\nrelay: relay.example.org:7443\nexpose:\n  web: 127.0.0.1:80\n  ssh: 127.0.0.1:22\n');
  const c = loadAgentConfig(path);
  assert.equal(c.identity, '/x/agent.pem');
  assert.equal(c.relay, 'relay.example.org:7443');
  assert.deepEqual(c.exposures.map((e) => e.name), ['web', 'ssh']);
});

test('config errors name the file, the line and the field', () => {
  const bad = config('bad.yaml', 'relay: r:1\nexpose:\n  web: 127.0.0.1:80\n  ssh: nowhere\n');
  assert.throws(() => loadAgentConfig(bad), (err: Error) => err.message.startsWith(`${bad}:4: expose.ssh:`) && /has no port/.test(err.message));
  const unknown = config('unknown.yaml', 'relay: r:1\nexpse:\n  web: h:1\n');
  assert.throws(() => loadAgentConfig(unknown), (err: Error) => err.message.startsWith(`${unknown}:2: expse:`));
  const wrongType = config('type.yaml', 'relay: r:1\nexpose:\n  web: 80\n');
  assert.throws(() => loadAgentConfig(wrongType), (err: Error) => err.message.startsWith(`${wrongType}:3: expose.web:`));
  const notYaml = config('broken.yaml', 'relay: [r:1\nexpose: x\n');
  assert.throws(() => loadAgentConfig(notYaml), (err: Error) => err.message.includes(`${notYaml}:`) && /not valid YAML/.test(err.message));
  assert.throws(() => loadAgentConfig(join(dir, 'missing.yaml')), /cannot be read/);
});
