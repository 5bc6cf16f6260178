// Listening on a UNIX-socket path for a stone (`/path/to/sock` or `./sock` as <sport>).
// stone 2.4 binds the path and fails when it exists (`Can't bind ... err=98`), and leaves the
// socket file behind when it exits, so a restarted stone fails on its own leftover. Here, on
// purpose: a leftover socket that nobody answers on is removed and the bind retried; a path
// somebody listens on, or anything that is not a socket, is an error that says which. Node
// (libuv) removes the socket file when the listener closes.
// Owns: the listen step of a UNIX-socket server. Must not: accept or relay.
import net from 'node:net';
import { lstatSync, unlinkSync } from 'node:fs';
import { errorMessage } from '../common/errors.js';

/** Why a UNIX-socket path cannot be listened on. */
export class UnixListenError extends Error {}

function listenOnce(server: net.Server, path: string, backlog: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen({ path, backlog }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Resolves true when something accepts connections on `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect({ path });
    const done = (result: boolean): void => {
      probe.destroy();
      resolve(result);
    };
    probe.once('connect', () => done(true));
    probe.once('error', () => done(false));
    setTimeout(() => done(false), 1000).unref();
  });
}

/** Listens on `path`, replacing a stale socket file. Throws UnixListenError with the reason. */
export async function listenUnix(server: net.Server, path: string, backlog: number): Promise<void> {
  try {
    await listenOnce(server, path, backlog);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw new UnixListenError(errorMessage(err));
  }
  let isSocket = false;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    throw new UnixListenError(errorMessage(err));
  }
  if (!isSocket) throw new UnixListenError(`${path} exists and is not a socket (not removed)`);
  if (await answers(path)) throw new UnixListenError(`another program is listening on ${path}`);
  try {
    unlinkSync(path);
  } catch (err) {
    throw new UnixListenError(`cannot remove the stale socket ${path}: ${errorMessage(err)}`);
  }
  try {
    await listenOnce(server, path, backlog);
  } catch (err) {
    throw new UnixListenError(errorMessage(err));
  }
}
