// `warpstone stone --ban-home DIR`: the relay's ban guard (guard/bans.ts, unchanged) behind the
// repeater's admission hook (admission.ts). An xhost denial is a `failure` ('xhost-denied') of
// its source on a private RelayEvents bus, a dropped connection a `banned-drop`; BanGuard counts,
// bans, persists in DIR's store, rate-limits its drop lines and picks up `warpstone ban add/remove
// --home DIR` within about a second, exactly as in the relay. Its pino lines are written into
// the stone log (stone's time/thread prefix, or `event: "ban"` JSON objects with --json).
// Owns: wiring store, bus and guard for a stone process. Must not: count or decide bans itself,
// or touch sockets (the engine drops banned sources).
import { pino, type DestinationStream } from 'pino';
import { StateError, WarpstoneError, errorMessage } from '../common/errors.js';
import { homePaths } from '../common/home.js';
import { formatAddress } from '../common/hostport.js';
import { BanGuard } from '../guard/bans.js';
import type { BanSettings } from '../guard/ban-settings.js';
import { RelayEvents } from '../ops/events.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import type { StoneAdmission } from './admission.js';
import type { StoneLog } from './stone-log.js';

/** pino's JSON lines -> StoneLog.guard(): `ban: MESSAGE key=value ...` in text mode. */
function stoneLogDestination(log: StoneLog): DestinationStream {
  return {
    write(chunk: string): void {
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(chunk) as Record<string, unknown>;
      } catch {
        log.guard('info', {}, `ban: ${chunk.trim()}`);
        return;
      }
      const { level, msg, ...fields } = parsed;
      const pairs = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
      const text = [`ban: ${typeof msg === 'string' ? msg : ''}`, ...pairs].join(' ');
      log.guard(typeof level === 'string' ? level : 'info', fields, text);
    },
  };
}

/**
 * Opens DIR's store and starts a BanGuard writing to `log`. Throws (store closed again) when the
 * store cannot be opened or read: the stone then does not start.
 */
export async function startStoneBans(home: string, settings: BanSettings, log: StoneLog): Promise<StoneAdmission> {
  let store: Store;
  try {
    store = await openStore(homePaths(home).store);
  } catch (err) {
    throw new StateError(`--ban-home ${home}: ${errorMessage(err)}`, err instanceof WarpstoneError ? err.code : 'WS_NO_STORE');
  }
  const events = new RelayEvents();
  const logger = pino({ level: 'info', base: {}, timestamp: false, formatters: { level: (label) => ({ level: label }) } }, stoneLogDestination(log));
  const guard = new BanGuard(store, events, logger, settings);
  try {
    await guard.start();
  } catch (err) {
    await guard.stop();
    await store.close();
    throw err;
  }
  let closed: Promise<void> | undefined;
  return {
    isBanned: (remoteAddress) => guard.isBanned(remoteAddress),
    xhostDenied: (remoteAddress, remotePort, detail) =>
      events.emit('failure', { time: new Date(), source: formatAddress(remoteAddress, remotePort), reason: 'xhost-denied', detail }),
    dropped: (remoteAddress, remotePort) => events.emit('banned-drop', { time: new Date(), source: formatAddress(remoteAddress, remotePort) }),
    close: () => {
      closed ??= (async () => {
        await guard.stop();
        await store.close();
      })();
      return closed;
    },
  };
}
