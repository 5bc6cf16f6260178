#!/usr/bin/env node
// Entry point of the `warpstone` command: runs the compiled CLI from dist/ when it has been
// built (`npm run build`) and is not older than the sources, else the TypeScript sources
// through tsx, so a fresh checkout works after `npm ci` alone and a stale build never runs
// code that no longer matches src/. WARPSTONE_FROM_SOURCE=1 forces the sources.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const built = join(root, 'dist', 'cli', 'main.js');
const sources = join(root, 'src');

function newestMtime(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

function builtIsCurrent() {
  if (process.env.WARPSTONE_FROM_SOURCE || !existsSync(built)) return false;
  if (!existsSync(sources)) return true;
  return statSync(built).mtimeMs >= newestMtime(sources);
}

if (builtIsCurrent()) {
  await import(pathToFileURL(built).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(join(sources, 'cli', 'main.ts')).href);
}
