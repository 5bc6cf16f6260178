#!/usr/bin/env node
// Builds the small N-API addon that reads a UNIX-socket peer's uid (SO_PEERCRED), which Node
// cannot do. Runs after `npm ci`. A machine without a C toolchain still installs: the build
// failure is reported here in words, and the features that need the addon (\U on UNIX-socket
// listeners, UNIX-user identity in the database relay) say the same when they are used.
import { spawnSync } from 'node:child_process';

const result = spawnSync('node-gyp', ['rebuild', '-C', 'native/peercred'], { stdio: ['ignore', 'pipe', 'pipe'], shell: false });
if (result.status === 0) {
  process.stdout.write('warpstone: built native/peercred (UNIX-socket peer credentials; exact TCP socket lookups for identd)\n');
  process.exit(0);
}
const why = result.error ? result.error.message : (result.stderr?.toString() ?? '').trim().split('\n').slice(-5).join('\n');
process.stderr.write(
  'warpstone: WARNING: could not build native/peercred (needs python3, make and a C compiler).\n' +
    'Everything else works; UNIX-socket peer identities will be unavailable until `npm run build:native` succeeds.\n' +
    `${why}\n`,
);
process.exit(process.env.CI ? 1 : 0);
