// A test-only protocol session for the listener tests: the client's first line is
// `USER <db user>`; the session asks the context's policy, audits, answers one line
// (`ALLOW <identity> <reason>` or `DENY <identity> <reason>: <message>`) and, when allowed,
// connects upstream and splices. It exercises the DbSessionContext contract exactly as the real
// MySQL/PostgreSQL sessions do, without a database protocol in the way.
// Owns: nothing under src/. Must not: be imported by anything under src/.
import type { Duplex } from 'node:stream';
import { splice } from '../../src/common/splice.ts';
import type { DbSessionContext, DbSessionHandler, Decision, DecisionInput } from '../../src/dbrelay/types.ts';

/** What each session saw, for assertions. */
export interface SeenSession {
  listener: string;
  source: string;
  identity: DbSessionContext['identity'];
  tlsMode: DbSessionContext['tls']['mode'];
  handshakeTimeoutMs: number;
}

function readLine(client: Duplex, max = 1024): Promise<string | undefined> {
  return new Promise((resolve) => {
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      const eol = buffered.indexOf(0x0a);
      if (eol >= 0 || buffered.length > max) {
        client.off('data', onData);
        client.pause();
        if (eol >= 0 && eol + 1 < buffered.length) client.unshift(buffered.subarray(eol + 1));
        resolve(eol >= 0 ? buffered.subarray(0, eol).toString('utf8') : undefined);
      }
    };
    client.on('data', onData);
    client.once('close', () => resolve(undefined));
  });
}

export function lineSession(seen: SeenSession[] = []): DbSessionHandler {
  return async (ctx: DbSessionContext) => {
    seen.push({ listener: ctx.listener, source: ctx.source, identity: ctx.identity, tlsMode: ctx.tls.mode, handshakeTimeoutMs: ctx.handshakeTimeoutMs });
    const timer = setTimeout(() => ctx.client.destroy(), ctx.handshakeTimeoutMs);
    const line = await readLine(ctx.client);
    clearTimeout(timer);
    const dbUser = line?.startsWith('USER ') ? line.slice(5) : undefined;
    const input: DecisionInput = dbUser === undefined ? { identity: ctx.identity, dbUser, parseProblem: 'no USER line' } : { identity: ctx.identity, dbUser };
    const decision = await ctx.decide(input);
    ctx.audit.record({
      time: new Date(),
      listener: ctx.listener,
      protocol: 'mysql',
      source: ctx.source,
      identity: ctx.identity.name,
      identitySource: ctx.identity.source,
      ...(ctx.identity.detail !== undefined ? { identityDetail: ctx.identity.detail } : {}),
      dbUser,
      decision: decision.allow ? 'allow' : 'deny',
      reason: decision.reason,
      message: decision.message,
    });
    const who = ctx.identity.name ?? '-';
    if (!decision.allow) {
      await new Promise<void>((resolve) => ctx.client.end(`DENY ${who} ${decision.reason}: ${decision.message}\n`, () => resolve()));
      ctx.client.destroy();
      return;
    }
    let upstream: Duplex;
    try {
      upstream = await ctx.connectUpstream();
    } catch (err) {
      await new Promise<void>((resolve) => ctx.client.end(`ERROR ${(err as Error).message}\n`, () => resolve()));
      ctx.client.destroy();
      return;
    }
    ctx.client.write(`ALLOW ${who} ${decision.reason}\n`);
    await splice(ctx.client, upstream, { idleTimeoutMs: ctx.idleTimeoutMs }).done;
  };
}

/** A test policy: allowed exactly when the DB user is the identity's name (the real one is policy.ts). */
export async function sameNamePolicy(input: DecisionInput): Promise<Decision> {
  if (input.identity.name === undefined) return { allow: false, reason: 'no-identity', message: `no identity: ${input.identity.detail ?? '?'}` };
  if (input.dbUser === undefined) return { allow: true, reason: 'unparsable', message: input.parseProblem ?? 'unparsable' };
  return input.dbUser === input.identity.name
    ? { allow: true, reason: 'match', message: `${input.identity.name} as ${input.dbUser}` }
    : { allow: false, reason: 'mismatch', message: `${input.identity.name} may not log in as ${input.dbUser}` };
}
