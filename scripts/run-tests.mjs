#!/usr/bin/env node
// Runs every test/**/*.test.ts with node:test through tsx. Node 20's runner finds no .ts files
// by itself, so the files are listed here. Extra arguments are passed to `node --test`
// (e.g. `npm test -- --test-name-pattern=revoke`); a path argument narrows the file list.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

function walk(dir) {
  const out = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...walk(path));
    else if (entry.endsWith('.test.ts')) out.push(path);
  }
  return out;
}

const args = process.argv.slice(2);
const filters = args.filter((a) => !a.startsWith('--'));
const flags = args.filter((a) => a.startsWith('--'));
let files = walk('test').sort();
if (filters.length > 0) files = files.filter((f) => filters.some((p) => f.includes(p)));
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
console.error(`running ${files.length} test files: ${files.map((f) => relative('test', f)).join(' ')}`);
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=300000', ...flags, ...files],
  { stdio: 'inherit' },
);
process.exit(result.status ?? 1);
