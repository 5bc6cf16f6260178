// The dashboard in a real browser (Debian's Chromium through playwright-core; no browser is ever
// downloaded): a real relay with a real agent process and traffic flowing through a real client
// process; the relay's own 'bytes' events feed the admin listener. The page shows the agent and
// the tunnel, the live graph moves (two samples of its data and its canvas differ), the CSP
// holds (no console errors), and a screenshot is saved to test-artifacts/dashboard.png.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { AdminHttp } from '../../src/ops/admin-http.ts';
import { Relay } from '../../src/relay/relay.ts';
import { openStore } from '../../src/store/open.ts';
import { homePaths } from '../../src/common/home.ts';
import { silentLogger } from '../../src/common/log.ts';
import { Cleanup, ROOT, echoServer, makeHome, startWarpstone } from '../helpers/harness.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const cleanup = new Cleanup();
after(() => cleanup.run());

/** Sends `chunk` every `everyMs` through the tunnel and reads the echo, until cleanup. */
function steadyTraffic(port: number, chunk: number, everyMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' }, () => {
      const data = Buffer.alloc(chunk, 0x5a);
      const timer = setInterval(() => socket.write(data), everyMs);
      cleanup.add(() => {
        clearInterval(timer);
        socket.destroy();
      });
      resolve();
    });
    socket.on('data', () => undefined);
    socket.on('error', reject);
  });
}

test('the dashboard shows the agent and the tunnel, and its I/O graph moves', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install chromium); browser test skipped` }, async (t) => {
  // A relay in this process (so its event bus feeds the admin listener), an agent and a client
  // as real processes, an echo service behind the tunnel.
  // The browser starts while the relay and its processes come up.
  const launching = chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true, timeout: 30_000 });
  launching.then((b) => cleanup.add(() => b.close())).catch(() => undefined);
  const home = await makeHome(cleanup);
  const agentFile = await home.issue('agent', 'box');
  const userFile = await home.issue('user', 'alice');
  await home.grant('alice', 'web');
  const servicePort = await echoServer(cleanup);
  const store = await openStore(homePaths(home.dir).store);
  cleanup.add(() => store.close());
  const relay = new Relay({ home: home.dir, listen: [{ host: '127.0.0.1', port: 0 }], store, log: silentLogger(), adminSocket: false });
  await relay.start();
  cleanup.add(() => relay.stop());
  const relayAt = `127.0.0.1:${relay.addresses[0]?.port}`;
  const agent = startWarpstone(cleanup, ['agent', '--identity', agentFile, '--relay', relayAt, '--expose', `web=127.0.0.1:${servicePort}`], home.env);
  const client = startWarpstone(cleanup, ['connect', 'web', '--identity', userFile, '--relay', relayAt, '--listen', '127.0.0.1:0'], home.env);
  const [line] = await Promise.all([client.waitFor(/listening on [^\s]+:\d+/), agent.waitFor(/tunnel registered/)]);
  await steadyTraffic(Number(line.split(':').pop()), 48 * 1024, 100);

  const admin = new AdminHttp({
    view: { status: () => relay.status(), store, listening: () => relay.addresses.length > 0 },
    events: relay.events,
    log: silentLogger(),
    listen: { host: '127.0.0.1', port: 0 },
  });
  await admin.start();
  cleanup.add(() => admin.stop());
  const url = `http://127.0.0.1:${admin.address().port}/`;

  let browser: Browser;
  try {
    browser = await launching;
  } catch (err) {
    assert.fail(`Chromium at ${CHROMIUM} did not start: ${(err as Error).message}`);
  }
  const page = await browser.newPage({ viewport: { width: 1280, height: 1500 } });
  const problems: string[] = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  // which URL failed, when the console only says "Failed to load resource"
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });

  const response = await page.goto(url, { waitUntil: 'load' });
  assert.equal(response?.status(), 200);
  assert.match(await page.title(), /Relay overview/);
  const agents = (await page.locator('#agents').textContent()) ?? '';
  assert.match(agents, /box/);
  assert.match(agents, /online/);
  assert.match(agents, /127\.0\.0\.1:\d+/, 'the agent address is shown');
  const tunnel = (await page.locator('#tunnels article.tunnel h3').first().textContent()) ?? '';
  assert.match(tunnel, /web\s+online/);
  assert.match((await page.locator('#streams').textContent()) ?? '', /alice/, 'the live stream is listed');

  const graph = '.io-graph[data-tunnel="web"]';
  await page.waitForSelector(`${graph} canvas`, { timeout: 15_000 });
  // wait for a point carrying bytes from the SSE stream
  await page.waitForFunction((sel) => Number((document.querySelector(sel) as HTMLElement | null)?.dataset.lastIn ?? 0) > 0, graph, { timeout: 15_000 });
  const sample = (): Promise<{ updates: number; second: number; lastIn: number; canvas: string }> =>
    page.$eval(graph, (el) => {
      const e = el as HTMLElement;
      return {
        updates: Number(e.dataset.updates ?? 0),
        second: Number(e.dataset.lastSecond ?? 0),
        lastIn: Number(e.dataset.lastIn ?? 0),
        canvas: (e.querySelector('canvas') as HTMLCanvasElement).toDataURL(),
      };
    });
  const first = await sample();
  await page.waitForFunction(({ sel, n }) => Number((document.querySelector(sel) as HTMLElement | null)?.dataset.updates ?? 0) >= n, { sel: graph, n: first.updates + 2 }, { timeout: 15_000 });
  const second = await sample();
  t.diagnostic(`graph: ${first.updates} -> ${second.updates} updates, last second ${first.second} -> ${second.second}, in ${first.lastIn} -> ${second.lastIn} B/s`);
  assert.ok(second.second > first.second, 'the graph advanced in time');
  assert.notEqual(second.canvas, first.canvas, 'the drawn graph changed');
  assert.ok(first.lastIn > 0 && second.lastIn > 0, 'bytes are flowing in the graph');

  const legend = (await page.locator(`${graph} .u-legend`).textContent()) ?? '';
  assert.match(legend, /in \(to service\)/);
  assert.match(legend, /out \(to client\)/);

  // narrow the view to the last 5 minutes, where the traffic is visible in the screenshot
  const five = page.locator('.graph-views button[data-seconds="300"]').first();
  await five.click();
  assert.equal(await five.getAttribute('aria-pressed'), 'true');
  const shown = await page.$eval(graph, (el) => (el as HTMLElement).dataset.view);
  assert.equal(shown, '300', 'the x scale now spans 300 s');

  const artifacts = join(ROOT, 'test-artifacts');
  mkdirSync(artifacts, { recursive: true });
  const shot = join(artifacts, 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(existsSync(shot));
  t.diagnostic(`screenshot: ${shot}`);
  assert.deepEqual(problems, [], 'no console errors (a CSP violation would show here)');
});
