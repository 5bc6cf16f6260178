#!/usr/bin/env node
// Entry point of the `warpstone` command: runs the compiled CLI from dist/ when it has been
// built (`npm run build`), else the TypeScript sources through tsx, so a fresh checkout works
// after `npm ci` alone.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const built = join(root, 'dist', 'cli', 'main.js');
if (existsSync(built) && !process.env.WARPSTONE_FROM_SOURCE) {
  await import(pathToFileURL(built).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(join(root, 'src', 'cli', 'main.ts')).href);
}
