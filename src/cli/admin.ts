// `warpstone admin token [--label TEXT]`: mints a fresh admin token for the relay's admin HTTP
// listener and prints it once (the store keeps only its SHA-256). Run on the relay host by its
// owner, it always works, so a lost phone or a changed address never locks the owner out.
// `warpstone admin token list` shows the tokens (never the secrets); `revoke ID` removes one,
// which also ends the browser sessions it opened.
// Owns: argument parsing and printing. Must not: hold token logic (src/ops/admin-token.ts).
import type { Command } from 'commander';
import { withStore } from './shared.js';
import { UsageError } from '../common/errors.js';
import { requireOpsStore } from '../ops/view.js';
import { mintAdminToken } from '../ops/admin-token.js';
import { ADMIN_HTTP_DEFAULT } from '../ops/admin-http.js';
import { formatHostPort } from '../common/hostport.js';
import type { AdminTokenRecord } from '../store/ops-store.js';

export async function runAdminTokenMint(home: string | undefined, label: string | undefined): Promise<{ id: number; token: string; label: string }> {
  return withStore(home, (store) => mintAdminToken(requireOpsStore(store), label ?? `made ${new Date().toISOString().slice(0, 16).replace('T', ' ')}Z`));
}

export async function runAdminTokenList(home: string | undefined): Promise<AdminTokenRecord[]> {
  return withStore(home, (store) => requireOpsStore(store).listAdminTokens());
}

export async function runAdminTokenRevoke(home: string | undefined, idText: string): Promise<boolean> {
  if (!/^\d{1,12}$/.test(idText)) throw new UsageError(`'${idText}' is not a token id; 'warpstone admin token list' shows them`);
  return withStore(home, (store) => requireOpsStore(store).removeAdminToken(Number(idText)));
}

export function formatTokenList(tokens: AdminTokenRecord[]): string {
  if (tokens.length === 0) return "no admin tokens; make one with 'warpstone admin token --label NAME'\n";
  const rows = [['ID', 'LABEL', 'CREATED', 'LAST USED'], ...tokens.map((t) => [String(t.id), t.label, t.createdAt.toISOString(), t.lastUsedAt ? t.lastUsedAt.toISOString() : 'never'])];
  const widths = (rows[0] as string[]).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n';
}

export function register(program: Command): void {
  const admin = program.command('admin').description("access to the relay's admin HTTP listener (metrics, dashboard)");
  const token = admin
    .command('token')
    .description('mint a fresh admin token (printed once); `list` and `revoke ID` manage them')
    .option('--label <text>', 'where the token will be used, e.g. "phone" or "prometheus"')
    .option('--home <dir>', 'state directory')
    .action(async (opts: { label?: string; home?: string }) => {
      const minted = await runAdminTokenMint(opts.home, opts.label);
      process.stdout.write(
        `admin token ${minted.id} ('${minted.label}'), shown only this once:\n\n${minted.token}\n\n` +
          `Send it as 'Authorization: Bearer <token>' (Prometheus, curl) or sign in at http://${formatHostPort(ADMIN_HTTP_DEFAULT)}/login.\n` +
          `Revoke it with: warpstone admin token revoke ${minted.id}\n`,
      );
    });
  token
    .command('list')
    .description('admin tokens: id, label, when made and last used (never the token itself)')
    .option('--home <dir>', 'state directory')
    .option('--json', 'print JSON')
    // `token` itself takes --home too and sees it first: read both levels
    .action(async (_opts: unknown, cmd: Command) => {
      const opts = cmd.optsWithGlobals<{ home?: string; json?: boolean }>();
      const tokens = await runAdminTokenList(opts.home);
      if (opts.json) {
        process.stdout.write(JSON.stringify(tokens.map(({ hash: _hash, ...rest }) => rest), null, 2) + '\n');
        return;
      }
      process.stdout.write(formatTokenList(tokens));
    });
  token
    .command('revoke')
    .description('remove an admin token; its sessions end at their next request')
    .argument('<id>', "the token's id (see 'warpstone admin token list')")
    .option('--home <dir>', 'state directory')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      const opts = cmd.optsWithGlobals<{ home?: string }>();
      const removed = await runAdminTokenRevoke(opts.home, id);
      if (!removed) throw new UsageError(`no admin token with id ${id}; 'warpstone admin token list' shows them`, 'WS_NO_SUCH_TOKEN');
      process.stdout.write(`revoked admin token ${id}\n`);
    });
}
