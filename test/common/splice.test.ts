// The pump on real loopback sockets, with and without throttles: bytes arrive exact and in order
// both ways, end-of-stream travels per direction, a throttle's held chunk is released in order
// (also when the source ends while it is held), and a pair that dies while shaped leaves nothing
// behind in its bucket. Rates are measured in test/guard/throttle-sockets.test.ts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes, createHash } from 'node:crypto';
import { splice, type SpliceHandle, type SpliceOptions } from '../../src/common/splice.ts';
import { ShapingRegistry } from '../../src/guard/throttle.ts';

const servers: net.Server[] = [];
const sockets: net.Socket[] = [];
after(() => {
  for (const s of sockets) s.destroy();
  for (const s of servers) s.close();
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Pair {
  /** the program writing into the pump's `a` side */
  sender: net.Socket;
  /** the program on the far side of `b` */
  receiver: net.Socket;
  /** the pump's sides */
  a: net.Socket;
  b: net.Socket;
  handle: SpliceHandle;
}

async function listen(onConnection: (s: net.Socket) => void): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => {
    sockets.push(s);
    // A destroyed pair resets the programs' sockets; tests that care look at 'close'.
    s.on('error', () => undefined);
    onConnection(s);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

/** sender -> [a  splice  b] -> receiver, all on loopback. */
async function splicedPair(options: SpliceOptions = {}): Promise<Pair> {
  let gotReceiver!: (s: net.Socket) => void;
  const receiverP = new Promise<net.Socket>((resolve) => (gotReceiver = resolve));
  const sinkPort = await listen((s) => {
    s.resume();
    gotReceiver(s);
  });
  let gotPump!: (p: { a: net.Socket; b: net.Socket; handle: SpliceHandle }) => void;
  const pumpP = new Promise<{ a: net.Socket; b: net.Socket; handle: SpliceHandle }>((resolve) => (gotPump = resolve));
  const proxyPort = await listen((a) => {
    const b = net.connect({ port: sinkPort, host: '127.0.0.1', allowHalfOpen: true }, () => gotPump({ a, b, handle: splice(a, b, options) }));
    sockets.push(b);
  });
  const sender = net.connect({ port: proxyPort, host: '127.0.0.1', allowHalfOpen: true });
  sender.on('error', () => undefined);
  sockets.push(sender);
  const [receiver, pump] = await Promise.all([receiverP, pumpP]);
  return { sender, receiver, ...pump };
}

/** Everything a socket delivers until its end. */
function readAll(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
  });
}

test('unshaped: 16 MiB each way at once arrive exact, counters match, the pair finishes cleanly', async () => {
  const pair = await splicedPair();
  const up = randomBytes(16 * 1024 * 1024);
  const down = randomBytes(16 * 1024 * 1024);
  const atReceiver = readAll(pair.receiver);
  const atSender = readAll(pair.sender);
  pair.sender.end(up);
  pair.receiver.end(down);
  const [gotUp, gotDown, result] = await Promise.all([atReceiver, atSender, pair.handle.done]);
  assert.equal(sha(gotUp), sha(up));
  assert.equal(sha(gotDown), sha(down));
  assert.equal(result.aToB, up.length);
  assert.equal(result.bToA, down.length);
  assert.equal(result.error, undefined);
});

test('unshaped: half-close travels one way while the other keeps flowing', async () => {
  const pair = await splicedPair();
  const atReceiver = readAll(pair.receiver);
  pair.sender.end(Buffer.from('question'));
  assert.equal((await atReceiver).toString(), 'question');
  // The receiver saw the end; its own direction is still open.
  const answer = randomBytes(1024 * 1024);
  const atSender = readAll(pair.sender);
  pair.receiver.end(answer);
  assert.equal(sha(await atSender), sha(answer));
  const result = await pair.handle.done;
  assert.equal(result.error, undefined);
});

test('shaped both ways: bytes arrive exact and in order through held and released chunks', async () => {
  const registry = new ShapingRegistry();
  registry.applyLimits([{ scope: 'tunnel', name: 'web', baselineBytesPerSecond: 4_000_000, maxBytesPerSecond: 4_000_000, creditCapBytes: 0 }]);
  const gates = registry.forStream('web', 'alice');
  assert.ok(gates);
  const pair = await splicedPair({ throttleAToB: gates.up, throttleBToA: gates.down });
  const up = randomBytes(2 * 1024 * 1024);
  const down = randomBytes(2 * 1024 * 1024);
  const atReceiver = readAll(pair.receiver);
  const atSender = readAll(pair.sender);
  pair.sender.end(up);
  pair.receiver.end(down);
  // While it runs, the two directions wait on their one bucket, one held chunk each at most.
  await new Promise((r) => setTimeout(r, 150));
  const waiting = registry.snapshot()[0]?.waiting ?? -1;
  assert.ok(waiting >= 1 && waiting <= 2, `waiting ${waiting}`);
  const [gotUp, gotDown, result] = await Promise.all([atReceiver, atSender, pair.handle.done]);
  assert.equal(sha(gotUp), sha(up));
  assert.equal(sha(gotDown), sha(down));
  assert.equal(result.aToB, up.length);
  assert.equal(result.bToA, down.length);
  assert.equal(result.error, undefined);
  // splice closed both gates when the pair finished.
  assert.deepEqual(
    registry.snapshot().map((s) => [s.streams, s.waiting, s.totalBytes]),
    [[0, 0, up.length + down.length]],
  );
  assert.equal(registry.armedTimers(), 0);
});

test('an end that arrives while a chunk is held goes out after that chunk', async () => {
  const registry = new ShapingRegistry();
  // 200 KB/s: 300 KB take about 1.5 s, and the sender ends at once.
  registry.applyLimits([{ scope: 'user', name: 'alice', baselineBytesPerSecond: 200_000, maxBytesPerSecond: 200_000, creditCapBytes: 0 }]);
  const gates = registry.forStream('web', 'alice');
  assert.ok(gates);
  const pair = await splicedPair({ throttleAToB: gates.up, throttleBToA: gates.down });
  const payload = randomBytes(300_000);
  const atReceiver = readAll(pair.receiver);
  pair.sender.end(payload);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(pair.a.isPaused(), true, 'the source is paused while its chunk waits');
  assert.equal(registry.snapshot()[0]?.waiting, 1);
  const got = await atReceiver;
  assert.equal(sha(got), sha(payload));
  pair.receiver.end();
  const result = await pair.handle.done;
  assert.equal(result.aToB, payload.length);
  assert.equal(result.error, undefined);
});

test('a shaped pair destroyed while a chunk is held leaves its bucket: no waiter, no timer', async () => {
  const registry = new ShapingRegistry();
  registry.applyLimits([{ scope: 'tunnel', name: 'web', baselineBytesPerSecond: 50_000, maxBytesPerSecond: 50_000, creditCapBytes: 0 }]);
  const gates = registry.forStream('web', 'alice');
  assert.ok(gates);
  const pair = await splicedPair({ throttleAToB: gates.up, throttleBToA: gates.down });
  pair.sender.write(randomBytes(256 * 1024));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(registry.snapshot()[0]?.waiting, 1);
  assert.equal(registry.armedTimers(), 1);
  const senderClosed = new Promise((resolve) => pair.sender.once('close', resolve));
  pair.handle.destroy(new Error('revoked'));
  const result = await pair.handle.done;
  await senderClosed;
  assert.equal(result.error?.message, 'revoked');
  assert.deepEqual(
    registry.snapshot().map((s) => [s.streams, s.waiting]),
    [[0, 0]],
  );
  assert.equal(registry.armedTimers(), 0);
});

test('an unshaped pair beside a saturated shaped one moves its bytes exactly', async () => {
  const registry = new ShapingRegistry();
  registry.applyLimits([{ scope: 'tunnel', name: 'slow', baselineBytesPerSecond: 100_000, maxBytesPerSecond: 100_000, creditCapBytes: 0 }]);
  const gates = registry.forStream('slow', 'alice');
  assert.ok(gates);
  const shaped = await splicedPair({ throttleAToB: gates.up, throttleBToA: gates.down });
  const chunk = Buffer.alloc(64 * 1024, 1);
  let stop = false;
  const flood = (): void => {
    while (!stop && shaped.sender.write(chunk));
    if (!stop) shaped.sender.once('drain', flood);
  };
  flood();
  const plain = await splicedPair();
  const payload = randomBytes(32 * 1024 * 1024);
  const atReceiver = readAll(plain.receiver);
  plain.sender.end(payload);
  assert.equal(sha(await atReceiver), sha(payload));
  plain.receiver.end();
  const result = await plain.handle.done;
  assert.equal(result.aToB, payload.length);
  // Meanwhile the shaped one was held to its bucket the whole time.
  const up = registry.snapshot()[0];
  assert.equal(up?.streams, 1);
  assert.ok((up?.totalBytes ?? 0) > 0);
  stop = true;
  shaped.handle.destroy();
  await shaped.handle.done;
});
