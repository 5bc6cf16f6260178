// The stone command-line grammar: every construct, the position-sensitive option state, -C
// files, and error messages with positions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseStoneArguments, splitHostPortExt, expandFilePattern } from '../../src/repeater/grammar.ts';
import { DEFAULT_PREPROCESSOR, STONE_DEFAULTS, type Destination, type StoneDefinition } from '../../src/repeater/types.ts';
import { parseError, parseProgram, testEnvironment } from './grammar-env.ts';

function only(args: string[]): StoneDefinition {
  const program = parseProgram(args);
  assert.equal(program.stones.length, 1);
  return program.stones[0] as StoneDefinition;
}

function destination<K extends Destination['kind']>(stone: StoneDefinition, kind: K): Extract<Destination, { kind: K }> {
  assert.equal(stone.destination.kind, kind);
  return stone.destination as Extract<Destination, { kind: K }>;
}

function errorText(args: string[], files: Record<string, string> = {}): string {
  return parseError(args, testEnvironment(files)).message;
}

test('a plain relay: destination, listener, defaults', () => {
  const program = parseProgram(['localhost:80', '8080']);
  assert.deepEqual(program.globals, {
    dryRun: false,
    debugLevel: 0,
    defaultDumpMode: 0,
    syslog: 0,
    numericAddresses: false,
    udpSessionMax: 100,
    transferBufferBytes: 1000,
    logFile: undefined,
    accountingFile: undefined,
    pidFile: undefined,
    chrootDirectory: undefined,
    coreDumpDirectory: undefined,
    childProcesses: 0,
    daemon: false,
    user: undefined,
    group: undefined,
    preprocessor: { command: DEFAULT_PREPROCESSOR, options: undefined },
    configFile: undefined,
  });
  const stone = program.stones[0] as StoneDefinition;
  assert.deepEqual(stone.destination, {
    kind: 'relay',
    endpoint: { kind: 'inet', host: 'localhost', port: { text: '80', number: 80 } },
    extensions: { transport: 'tcp', ssl: false, ipv6: false, ipOnly: false, base64: false, blocking: false, noBackup: false },
  });
  assert.deepEqual(stone.listener, {
    address: { kind: 'inet', host: undefined, interface: undefined, port: { text: '8080', number: 8080 } },
    extensions: { transport: 'tcp', ssl: false, ipv6: false, ipOnly: false, http: false, base64: false, blocking: false, ident: false },
    position: { kind: 'argument', index: 1 },
  });
  assert.deepEqual(stone.settings, {
    idleTimeoutSeconds: 600,
    backlog: 50,
    reuseAddress: false,
    localBind: undefined,
    sslServer: undefined,
    sslClient: undefined,
    backups: [],
    balanceGroups: [],
  });
  assert.deepEqual([stone.index, stone.origin, stone.xhosts, program.warnings], [0, 'command-line', [], []]);
});

test('listener forms: port, host:port, host%interface:port, service names, v6, UNIX paths', () => {
  const l = (sport: string) => only(['localhost:80', sport]).listener;
  assert.deepEqual(l('127.0.0.1:8080').address, { kind: 'inet', host: '127.0.0.1', interface: undefined, port: { text: '8080', number: 8080 } });
  assert.deepEqual(l('10.0.0.1%eth1:8080').address, { kind: 'inet', host: '10.0.0.1', interface: 'eth1', port: { text: '8080', number: 8080 } });
  assert.deepEqual(l('%lo:8080').address, { kind: 'inet', host: undefined, interface: 'lo', port: { text: '8080', number: 8080 } });
  assert.deepEqual(l('http').address, { kind: 'inet', host: undefined, interface: undefined, port: { text: 'http', number: 80 } });
  assert.deepEqual(l('domain/udp').extensions.transport, 'udp');
  assert.deepEqual(l('::1:8443/v6,ssl').address, { kind: 'inet', host: '::1', interface: undefined, port: { text: '8443', number: 8443 } });
  assert.deepEqual([l('8443/v6only').extensions.ipv6, l('8443/v6only').extensions.ipOnly], [true, true]);
  assert.deepEqual(l('8080/http,base,block,ident').extensions, { transport: 'tcp', ssl: false, ipv6: false, ipOnly: false, http: true, base64: true, blocking: true, ident: true });
  assert.deepEqual(l('0').address, { kind: 'inet', host: undefined, interface: undefined, port: { text: '0', number: 0 } }, 'port 0: any free port');
  const dir = mkdtempSync(join(tmpdir(), 'ws-grammar-'));
  try {
    assert.deepEqual(l(`${dir}/app.sock`).address, { kind: 'unix', path: `${dir}/app.sock` });
    const sockdir = join(dir, 'sub');
    mkdirSync(sockdir);
    assert.deepEqual(l(`${sockdir}/ssl`).address, { kind: 'unix', path: `${sockdir}/ssl` }, 'a directory before the last / makes it part of the path');
    const withExt = l(`${dir}/app.sock/ssl`);
    assert.deepEqual([withExt.address, withExt.extensions.ssl], [{ kind: 'unix', path: `${dir}/app.sock` }, true]);
    assert.match(errorText(['localhost:80', `${dir}/nodir/app.sock`]), /'.*\/nodir' is not an existing directory, so stone reads 'app\.sock' as extensions: unknown extension 'app\.sock'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.deepEqual(l('./relative.sock').address, { kind: 'unix', path: './relative.sock' });
});

test('listener refusals', () => {
  assert.match(errorText(['localhost:80', ':8080']), /^argument 2: ':8080': stone 2\.4 cannot listen on ':8080' \(it loses the port\); write 8080 for all addresses/);
  assert.match(errorText(['localhost:80', '70000']), /^argument 2: '70000': listening port 70000 is out of range \(0-65535\)$/);
  assert.match(errorText(['localhost:80', 'nosuchservice']), /unknown tcp service 'nosuchservice' \(listening port\)/);
  assert.match(errorText(['localhost:80', '8080/foo']), /^argument 2: '8080\/foo': unknown extension 'foo' in '8080\/foo': expected tcp, udp, ssl, v6, v6only, http, base, block or ident/);
  assert.match(errorText(['localhost:80', '8080/']), /an empty extension in '8080\/'/);
  assert.match(errorText(['localhost:80', '8080/ssl/v6']), /^argument 2: '8080\/ssl\/v6': extensions are separated by commas, not '\/': write 8080\/ssl,v6$/);
  assert.match(errorText(['localhost:80', '::1:8080']), /::1 is an IPv6 address: add the \/v6 extension/);
  assert.match(errorText(['localhost:80', '127.0.0.1:8080/v6']), /127\.0\.0\.1 is an IPv4 address but \/v6 asks for IPv6/);
  assert.match(errorText(['localhost:80', 'proxy']), /cannot listen on 'proxy'/);
  assert.match(errorText(['localhost:80', '-d']), /^argument 2: '-d': expected <sport> .*got an option/);
  assert.match(errorText(['localhost:80', './x%y']), /'%' in a UNIX socket path/);
  assert.match(errorText(['localhost:80', './x.sock/udp']), /a UNIX socket listener cannot be \/udp/);
  assert.match(errorText(['localhost:80']), /^argument 1: 'localhost:80': expected <sport>, the port to listen on, after the destination$/);
});

test('extension quirks stone accepts are kept, with a warning', () => {
  const program = parseProgram(['localhost:80/sslx,v6', '8080/udp,ssl,http']);
  const stone = program.stones[0] as StoneDefinition;
  assert.equal(stone.destination.extensions.ssl, true);
  assert.equal(stone.destination.extensions.ipv6, false, "stone stops reading at the garbage, so ',v6' is ignored too");
  assert.deepEqual(stone.listener.extensions, { transport: 'udp', ssl: false, ipv6: false, ipOnly: false, http: false, base64: false, blocking: false, ident: false });
  assert.deepEqual(
    program.warnings.map((w) => [w.token, w.message]),
    [
      ['localhost:80/sslx,v6', "stone 2.4 reads 'ssl' and silently ignores 'x,v6' after it"],
      ['8080/udp,ssl,http', 'stone ignores /ssl, /http on a UDP listener'],
    ],
  );
});

test('destination forms: relay, UNIX, udp, proxy, health, identd, /http, /proxy, /mproxy', () => {
  assert.deepEqual(destination(only(['/var/run/app.sock', '8080']), 'relay').endpoint, { kind: 'unix', path: '/var/run/app.sock' });
  const udp = destination(only(['ntp.example:ntp/udp,v6', '123/udp']), 'relay');
  assert.deepEqual([udp.endpoint, udp.extensions.transport, udp.extensions.ipv6], [{ kind: 'inet', host: 'ntp.example', port: { text: 'ntp', number: 123 } }, 'udp', true]);
  const proxy = destination(only(['proxy/v6only', '8080']), 'proxy');
  assert.deepEqual([proxy.extensions.ipv6, proxy.extensions.ipOnly, proxy.permits], [true, true, []]);
  assert.equal(only(['health', '8081']).destination.kind, 'health');
  assert.equal(only(['identd', '113']).destination.kind, 'identd');
  const http = only(['relay.example.org:7443/ssl,http', '8080', 'CONNECT web HTTP/1.1', '127.0.0.1']);
  const request = destination(http, 'http-request');
  assert.deepEqual(request.request, { text: 'CONNECT web HTTP/1.1', parts: [{ kind: 'text', text: 'CONNECT web HTTP/1.1' }] });
  assert.equal(request.extensions.ssl, true);
  assert.equal(http.xhosts.length, 1, 'the request line is not an xhost');
  assert.ok(http.settings.sslClient, 'an SSL destination takes the -q set');
  const header = destination(only(['fwall:8080/proxy', '9080', 'Proxy-Authorization: Basic \\U']), 'insert-header');
  assert.deepEqual([header.everyRequest, header.header.parts], [false, [{ kind: 'text', text: 'Proxy-Authorization: Basic ' }, { kind: 'value', value: 'user-name' }]]);
  assert.equal(destination(only(['fwall:8080/mproxy', '9080', 'X: y']), 'insert-header').everyRequest, true);
  assert.equal(only(['fwall:8080/http,proxy', '9080', 'GET / HTTP/1.0']).destination.kind, 'http-request', '/http wins over /proxy, as in stone');
  assert.equal(only(['::1:80/v6', '8080']).destination.kind, 'relay');
});

test('destination refusals', () => {
  assert.match(errorText(['8080', 'localhost:80']), /^argument 1: '8080': expected the destination first: <host>:<port>, proxy, health, identd or a UNIX socket path/);
  assert.match(errorText([':80', '8080']), /the destination host is missing \(stone 2\.4 crashes on this\)/);
  assert.match(errorText(['localhost:', '8080']), /expected a destination port, it is empty/);
  assert.match(errorText(['health/http', '8080', 'GET /']), /expected <host>:<port> before the extensions/);
  assert.match(errorText(['localhost:80/http', '8080']), /^argument 2: '8080': expected the HTTP request line .* after <sport>$/);
  assert.match(errorText(['localhost:80/proxy', '8080', '--', 'x:1', '2']), /expected the header line to insert/);
  assert.match(errorText(['localhost:80/http', '8080', 'GET \\?x']), /^argument 3: 'GET \\\\\?x': '\\\?' must be followed by a group digit.* \(at character 5\)$/);
  assert.match(errorText(['[::1]:80/v6', '8080']), /stone writes IPv6 addresses without brackets: ::1:<port>\/v6/);
  assert.match(errorText(['::1:80', '8080']), /::1 is an IPv6 address: add the \/v6 extension/);
  assert.match(errorText(['::1/v6', '8080']), /^argument 1: '::1\/v6': an IPv6 address needs a port: stone writes ::1:<port>\/v6$/);
  assert.match(errorText(['localhost:80', 'fe80::1']), /an IPv6 address needs a port: stone writes fe80::1:<port>\/v6/);
  assert.match(errorText(['localhost:80/ssl/v6', '8080']), /write localhost:80\/ssl,v6/);
  assert.match(errorText(['/tmp/x.sock/udp', '8080']), /UNIX socket destination cannot be \/udp|is not an existing directory/);
  assert.match(errorText(['proxy/udp', '8080']), /'proxy' cannot be \/udp/);
  assert.match(errorText(['localhost:80/apop', '110']), /unknown extension 'apop'/);
});

test('xhosts of a stone: the family follows the listener', () => {
  assert.deepEqual(only(['localhost:80', '8080', '127.0.0.1', '!', '10.0.0.0/8']).xhosts.map((e) => e.kind), ['host', 'toggle', 'host']);
  assert.match(errorText(['localhost:80', '8080', '::1']), /^argument 3: '::1': ::1 is an IPv6 address but this entry is resolved as IPv4/);
  assert.doesNotThrow(() => parseProgram(['localhost:80', '8080/v6', '::1', '127.0.0.1']), 'a dual-stack listener takes both');
  assert.match(errorText(['localhost:80', '::1:8080/v6', '127.0.0.1']), /resolved as IPv6/);
  assert.match(errorText(['localhost:80', '8080/v6only', '127.0.0.1']), /resolved as IPv6/);
  assert.match(errorText(['localhost:80', '8080', '192.168.1.0/255.255.255.0']), /write the prefix length: 192\.168\.1\.0\/24/);
});

test('several stones, options between them, position-sensitive settings', () => {
  const program = parseProgram([
    '-T', '100', 'a.example:1', '1001',
    '--', '-T', '200', '-A', '5', '-r', '-I', '10.0.0.9', '-X', '4096', 'b.example:2', '1002', '10.0.0.0/8',
    '--', '-I', '', '-d', '-p', 'c.example:3', '1003',
    '--', '-X', '8192',
  ]);
  const [a, b, c] = program.stones as [StoneDefinition, StoneDefinition, StoneDefinition];
  assert.deepEqual([a.settings.idleTimeoutSeconds, a.settings.backlog, a.settings.reuseAddress, a.settings.localBind], [100, 50, false, undefined]);
  assert.deepEqual([b.settings.idleTimeoutSeconds, b.settings.backlog, b.settings.reuseAddress], [200, 5, true]);
  assert.deepEqual(b.settings.localBind, { text: '10.0.0.9', host: '10.0.0.9', port: undefined, ipv6: false });
  assert.deepEqual([c.settings.idleTimeoutSeconds, c.settings.localBind], [200, undefined], "-I '' resets");
  assert.deepEqual([program.globals.transferBufferBytes, program.globals.debugLevel, program.globals.defaultDumpMode], [8192, 1, 1], 'globals: the last value wins wherever it is');
  assert.deepEqual(program.stones.map((s) => [s.index, s.position]), [[0, { kind: 'argument', index: 2 }], [1, { kind: 'argument', index: 14 }], [2, { kind: 'argument', index: 22 }]]);
});

test('option clusters take their arguments in order; -p counts modulo 16', () => {
  const program = parseProgram(['-dpnrD', '-Ld', '/var/log/stone.log', '-La', 'first.log', '-', '-ppp', 'localhost:80', '8080']);
  assert.deepEqual(
    [program.globals.debugLevel, program.globals.defaultDumpMode, program.globals.numericAddresses, program.globals.daemon, program.globals.logFile, program.globals.accountingFile],
    [2, 4, true, true, { kind: 'file', path: 'first.log' }, { kind: 'stdout' }],
  );
  assert.equal(parseProgram([`-${'p'.repeat(17)}`, 'localhost:80', '8080']).globals.defaultDumpMode, 1);
  const g = parseProgram(['-u', '10', '-A', '7', '-f', '2', '-l', '-o', '1000', '-g', 'staff', '-t', '/srv', '-c', '/tmp', '-i', '/run/stone.pid', 'localhost:80', '8080']).globals;
  assert.deepEqual([g.udpSessionMax, g.childProcesses, g.syslog, g.user, g.group, g.chrootDirectory, g.coreDumpDirectory, g.pidFile], [10, 2, 1, { kind: 'id', id: 1000 }, { kind: 'name', name: 'staff' }, '/srv', '/tmp', '/run/stone.pid']);
});

test('option refusals point at the option or its value', () => {
  assert.equal(errorText(['-L']), "argument 1: '-L': expected a log file (or - for stdout) after -L");
  assert.equal(errorText(['-dT']), "argument 1: '-dT': expected the idle timeout in seconds after -T");
  assert.equal(errorText(['-T', 'abc', 'localhost:80', '8080']), "argument 2: 'abc': expected the idle timeout in seconds (an integer)");
  assert.equal(errorText(['-X', '0', 'localhost:80', '8080']), "argument 2: '0': expected the transfer buffer size of at least 1");
  assert.equal(errorText(['-o', '', 'localhost:80', '8080']), "argument 2: '': expected a user name or uid, got an empty argument");
  assert.match(errorText(['-H', '10', 'localhost:80', '8080']), /^argument 1: '-H': unknown option -H: expected one of -C -N/);
  assert.match(errorText(['localhost:80', '8080', '--', '-N', 'x:1', '2']), /^argument 4: '-N': -N is only understood before the first stone$/);
  assert.match(errorText(['localhost:80', '8080', '--', '-h']), /-h is only understood before the first stone/);
  assert.match(errorText(['localhost:80', '8080', '--', '--']), /^argument 4: '--': expected a stone or options after '--', got another '--'$/);
  assert.match(errorText(['localhost:80', '8080', '--', '-C', 'f']), /-C is only understood before the first stone/);
  assert.match(errorText([]), /^argument 1: expected a <stone>: <host>:<port> <sport>/);
  assert.match(errorText(['-d', '--']), /^argument 3: expected a <stone>/);
  assert.match(errorText(['--', '-d']), /^argument 3: no <stone> given \(only options\)/);
});

test('-- and lone - in the leading options; -h and -N', () => {
  const warned = parseProgram(['-', '-d-x', 'localhost:80', '8080']);
  assert.equal(warned.globals.debugLevel, 1);
  assert.deepEqual(warned.warnings.map((w) => w.message), ["a lone '-' is ignored (stone does the same)", "'-' ends the options; stone ignores 'x' after it"]);
  assert.equal(parseProgram(['--', '-d', 'localhost:80', '8080']).globals.debugLevel, 1, 'after --, options are read between stones');
  assert.deepEqual(parseStoneArguments(['-d', '-h', 'ssl', 'garbage'], testEnvironment()), { kind: 'help', topic: 'ssl', position: { kind: 'argument', index: 1 } });
  assert.deepEqual(parseStoneArguments(['-h'], testEnvironment()), { kind: 'help', topic: undefined, position: { kind: 'argument', index: 0 } });
  assert.equal(parseProgram(['-N', 'localhost:80', '8080']).globals.dryRun, true);
});

test('-C: leading options of the file come after the command line’s; command-line stones first', () => {
  const files = { 'stone.cfg': '# relay config\n-T 30 -d\nb.example:2 1002 # second\n--\n-T 40\n  c.example:3 1003\n' };
  const environment = testEnvironment(files, { HOME: '/home/op' });
  const result = parseStoneArguments(['-T', '10', '-C', 'stone.cfg', 'a.example:1', '1001', '--', '-T', '20'], environment);
  assert.equal(result.kind, 'program');
  if (result.kind !== 'program') return;
  const { stones, globals } = result.program;
  assert.deepEqual(stones.map((s) => [s.origin, s.settings.idleTimeoutSeconds]), [['command-line', 30], ['config-file', 20], ['config-file', 40]]);
  assert.deepEqual(stones[1]?.position, { kind: 'file', file: 'stone.cfg', line: 3, column: 1 });
  assert.deepEqual(globals.configFile, { path: 'stone.cfg', position: { kind: 'argument', index: 3 } });
  assert.equal(globals.debugLevel, 1);
  assert.deepEqual(environment.requests.map((r) => [r.path, r.preprocessor]), [['stone.cfg', { command: DEFAULT_PREPROCESSOR, options: undefined }]]);
});

test('-C: options-only files, preprocessor settings, $VAR, refusals with file positions', () => {
  const files = {
    'opts.cfg': '-T 15 -q "CAfile=$HOME/ca.pem"\n',
    'bad.cfg': 'localhost:80 8080\n--\n  localhost:81 8081 10.0.0.0/255.0.0.0\n',
    'nested.cfg': '-C other.cfg\n',
    'empty.cfg': '# nothing\n',
    'quote.cfg': 'localhost:80 "8080\n',
  };
  const environment = testEnvironment(files, { HOME: '/home/op' });
  const program = parseProgram(['-P', '', '-Q', '-I/etc', '-C', 'opts.cfg', 'localhost:80/ssl', '8080'], environment);
  assert.equal(program.stones[0]?.settings.idleTimeoutSeconds, 15);
  assert.equal(program.stones[0]?.settings.sslClient?.caFile, '/home/op/ca.pem');
  assert.equal(program.globals.preprocessor, undefined);
  assert.deepEqual(environment.requests[0]?.preprocessor, undefined, "-P '' reads the file as it is");
  parseProgram(['-Q', '-DX=1', '-C', 'opts.cfg', 'localhost:80', '8080'], environment);
  assert.deepEqual(environment.requests[1]?.preprocessor, { command: DEFAULT_PREPROCESSOR, options: '-DX=1' });

  assert.equal(errorText(['-C', 'bad.cfg'], files), "bad.cfg:3:21: '10.0.0.0/255.0.0.0': dotted netmask 255.0.0.0 is refused (stone 2.4: \"netmask by bits pattern is deprecated\"); write the prefix length: 10.0.0.0/8");
  assert.match(errorText(['-C', 'nested.cfg'], files), /^nested\.cfg:1:1: '-C': -C may be given only once/);
  assert.match(errorText(['-C', 'a.cfg', '-C', 'b.cfg'], files), /^argument 3: '-C': -C may be given only once/);
  assert.match(errorText(['-C', 'missing.cfg', 'localhost:80', '8080'], files), /^argument 2: 'missing\.cfg': cannot read the -C file: ENOENT/);
  assert.match(errorText(['-C', 'empty.cfg'], files), /^argument 3: expected a <stone>/);
  assert.match(errorText(['-C'], files), /^argument 1: '-C': expected a configuration file after -C$/);
  assert.match(errorText(['-C', 'quote.cfg'], files), /^quote\.cfg:1:14: '8080\\n': unterminated "\.\.\." quote/);
  assert.doesNotThrow(() => parseProgram(['-C', 'empty.cfg', 'localhost:80', '8080'], testEnvironment(files)));
  const late = parseProgram(['-C', 'opts.cfg', 'localhost:80', '8080', '--', '-P', 'm4'], testEnvironment(files));
  assert.match(late.warnings[0]?.message ?? '', /-P has no effect here: the -C file has already been read/);
});

test('-x permits: newest first, captured by proxy stones, cleared by -x --', () => {
  const program = parseProgram([
    '-x', '80,443,8000-8080', 'www.example', '10.0.0.0/8', '--',
    '-x', 'webcache,40000', '--',
    'proxy', '3128',
    '--', '-x', '--', 'proxy', '3129',
  ]);
  const first = destination(program.stones[0] as StoneDefinition, 'proxy');
  assert.deepEqual(first.permits.map((p) => p.ports.map((r) => `${r.from.number}-${r.to.number}`)), [['8080-8080', '40000-40000'], ['80-80', '443-443', '8000-8080']]);
  assert.deepEqual(first.permits.map((p) => p.xhosts.length), [0, 2]);
  assert.equal(first.permits[0]?.xhosts[0], undefined, 'an empty xhost list allows any host on those ports');
  assert.deepEqual(destination(program.stones[1] as StoneDefinition, 'proxy').permits, []);
  assert.ok((program.stones[0] as StoneDefinition).settings.sslClient, 'proxy stones take the -q set');
  assert.match(errorText(['-x', '80,', 'h', '--', 'proxy', '8080']), /^argument 2: '80,': expected a port list such as 80,443,8000-8080/);
  assert.match(errorText(['-x', '1-2-3', '--', 'proxy', '8080']), /one '-' per range/);
  assert.match(errorText(['-x', '90-80', '--', 'proxy', '8080']), /port range 90-80 is backwards/);
  assert.match(errorText(['-x', 'nosuch', '--', 'proxy', '8080']), /unknown tcp service 'nosuch'/);
  assert.match(errorText(['-x']), /^argument 1: '-x': expected a port list .* after -x$/);
  assert.match(errorText(['-x', '80', 'h', 'proxy', '8080']), /no <stone> given|expected a <stone>/, 'without -- the list swallows the rest, as in stone');
});

test('-s chat and -b backups: the chat in force is captured; relay stones see earlier rules only', () => {
  const program = parseProgram([
    '-s', 'HELO x\\r\\n', '^250 ', 'QUIT\\r\\n', '', '--',
    '-b', '10', 'master.example:25', 'backup.example:25',
    'master.example:25', '2525',
    '--', '-s', '--', '-b', 'host=check.example', 'port=2526', 'ext=v6', '0', 'db.example:5432', 'db2.example:5432', '-B', 'web1:80', 'web2:80', 'web3:80', '--',
    'web1:80', '8080',
    '--', 'web1:80/nobackup', '8081', '--', 'proxy', '3128', '--', './app.sock', '8082',
  ]);
  const [relay, balanced, noBackup, proxy, unix] = program.stones as StoneDefinition[] as [StoneDefinition, StoneDefinition, StoneDefinition, StoneDefinition, StoneDefinition];
  const [rule] = relay.settings.backups;
  assert.ok(rule);
  assert.deepEqual([rule.intervalSeconds, rule.master.host, rule.master.port?.number, rule.backup.host, rule.check], [10, 'master.example', 25, 'backup.example', rule.master]);
  assert.deepEqual(rule.chat.map((s) => [Buffer.from(s.send.bytes).toString(), s.expect.source]), [['HELO x\r\n', '^250 '], ['QUIT\r\n', '']]);
  assert.equal(balanced.settings.backups.length, 2);
  const newest = balanced.settings.backups[0];
  assert.deepEqual([newest?.intervalSeconds, newest?.chat, newest?.check], [0, [], { text: 'check.example:2526/v6', host: 'check.example', port: { text: '2526', number: 2526 }, ipv6: true }]);
  assert.deepEqual(balanced.settings.balanceGroups.map((g) => g.members.map((m) => m.text)), [['web1:80', 'web2:80', 'web3:80']]);
  assert.deepEqual(relay.settings.balanceGroups, [], 'groups given later do not apply');
  assert.deepEqual([noBackup.settings.backups, noBackup.settings.balanceGroups.length], [[], 1]);
  assert.equal(proxy.settings.backups.length, 2, 'proxy stones look rules up per request');
  assert.deepEqual([unix.settings.backups, unix.settings.balanceGroups], [[], []]);
  assert.match(program.warnings.map((w) => w.message).join('\n'), /interval 0: the master is treated as failed from the start/);
});

test('-s / -b / -B refusals', () => {
  assert.match(errorText(['-s', 'a', 'b', 'localhost:80', '8080']), /^argument 6: expected the <expect> regular expression|is not closed/);
  assert.match(errorText(['-s', 'a', '(', '--', 'localhost:80', '8080']), /^argument 3: '\(': regular expression "\(": unmatched '\(' at offset 0/);
  assert.match(errorText(['-s', 'a\\xZZ', 'b', '--', 'localhost:80', '8080']), /^argument 2: 'a\\\\xZZ': '\\x' must be followed by one or two hex digits/);
  assert.match(errorText(['-s']), /the -s chat at '-s' is not closed/);
  assert.match(errorText(['-b', '10', 'm:1']), /^argument 1: '-b': expected -b \[host=<host>\]/);
  assert.match(errorText(['-b', 'often', 'm:1', 'b:1', 'localhost:80', '8080']), /^argument 2: 'often': expected the check interval in seconds \(an integer\)$/);
  assert.match(errorText(['-b', '10', 'master', 'b:1', 'localhost:80', '8080']), /^argument 3: 'master': expected the master <host>:<port>$/);
  assert.match(errorText(['-b', '10', '::1:80', 'b:1', 'localhost:80', '8080']), /written like fe80::1:80\/v6/);
  assert.match(errorText(['-B', '--', 'localhost:80', '8080']), /at least one member; stone 2\.4 crashes on an empty group/);
  assert.match(errorText(['-B', 'foo', '--', 'localhost:80', '8080']), /^argument 2: 'foo': expected a <host>:<port> member of the -B group$/);
  const v6 = parseProgram(['-B', 'fe80::1:80/v6', 'fe80::2:80/v6', '--', 'localhost:80', '8080']).stones[0]?.settings.balanceGroups[0]?.members[0];
  assert.deepEqual(v6, { text: 'fe80::1:80/v6', host: 'fe80::1', port: { text: '80', number: 80 }, ipv6: true });
});

test("stone's hostPortExt heuristics", () => {
  assert.deepEqual(splitHostPortExt('host:80'), { host: 'host', port: '80', ext: undefined });
  assert.deepEqual(splitHostPortExt('abc:80'), { host: 'abc', port: '80', ext: undefined }, 'one colon after hex: host and port');
  assert.deepEqual(splitHostPortExt('fe80::1:80'), { host: 'fe80::1:80', port: '', ext: undefined }, 'an IPv6 address without port');
  assert.deepEqual(splitHostPortExt('fe80::1:80/v6'), { host: 'fe80::1', port: '80', ext: 'v6' });
  assert.deepEqual(splitHostPortExt('1:2:3:4:5:6:7:8:80'), { host: '1:2:3:4:5:6:7:8', port: '80', ext: undefined });
  assert.equal(splitHostPortExt('::1'), undefined, 'a leading :: is illegal to stone');
  assert.equal(splitHostPortExt('host'), undefined);
});

test('-q/-z: each option, stone’s verify rules, crl_check_all fixed, snapshots per stone', () => {
  const environment = testEnvironment({}, { SSL_CIPHER: 'HIGH' });
  const program = parseProgram([
    '-z', 'verify,once', '-z', 're0=^CN=(.*)$', '-z', 're-1=Root', '-z', 'depth=3', '-z', 'crl_check_all', '-z', 'uniq',
    '-z', 'certkey=/etc/stone/%n.pem', '-z', 'servername=www.example', '-z', 'tls1.2', '-z', 'no_tls1.1', '-z', 'sni', '-z', 'lb1=3',
    '-q', 'verify', '-q', 'CAfile=/etc/ssl/ca.pem', '-q', 'CApath=/etc/ssl/certs', '-q', 'servername=backend', '-q', 'cipher=ECDHE', '-q', 'shutdown=nowait',
    'backend.example:443/ssl', '443/ssl',
    '--', '-z', 'default', '-z', 'certkeypat=/etc/stone/%s-%t.pem', '-q', 'verify,none', 'localhost:80', '127.0.0.1:8443/ssl',
  ], environment);
  const [first, second] = program.stones as [StoneDefinition, StoneDefinition];
  const server = first.settings.sslServer;
  assert.ok(server);
  assert.deepEqual(
    [server.role, server.verify, server.depth, server.crlCheck, server.uniqueSerial, server.protocol, server.disabledProtocols, server.sni, server.loadBalance, server.cipherList],
    ['server', 'require-once', 3, 'chain', true, 'tls1.2', ['tls1.1'], true, { group: 1, modulus: 3 }, 'HIGH'],
  );
  assert.deepEqual([server.keyFile, server.certFile], ['/etc/stone/%n.pem', '/etc/stone/%n.pem'], 'certkey= is a file name, not a pattern');
  assert.equal(server.peerRegexes.length, 10);
  assert.deepEqual([server.peerRegexes[0]?.source, server.peerRegexes[0]?.flags, server.peerRegexes[9]?.source], ['^CN=(.*)$', 'is', 'Root']);
  const client = first.settings.sslClient;
  assert.deepEqual([client?.role, client?.verify, client?.caFile, client?.caPath, client?.serverName, client?.cipherList, client?.shutdown, client?.keyFile], ['client', 'peer', '/etc/ssl/ca.pem', '/etc/ssl/certs', 'backend', 'ECDHE', 'nowait', undefined]);
  const reset = second.settings.sslServer;
  assert.deepEqual([reset?.verify, reset?.depth, reset?.serverName, reset?.certFilePattern], ['none', STONE_DEFAULTS.sslDepth, undefined, '/etc/stone/%s-%t.pem']);
  assert.deepEqual([reset?.certFile, reset?.keyFile], ['/etc/stone/127.0.0.1-localhost.pem', '/etc/stone/127.0.0.1-localhost.pem'], 'patterns are expanded per stone');
  assert.equal(second.settings.sslClient, undefined, 'no -q set for a plain destination');
  const defaults = only(['localhost:80', '8443/ssl']).settings.sslServer;
  assert.deepEqual([defaults?.keyFile, defaults?.certFile, defaults?.verify], [STONE_DEFAULTS.serverCertificate, STONE_DEFAULTS.serverCertificate, 'none']);
  assert.equal(expandFilePattern('%n/%s/%t/%%/%x%', 'n', 's', 't'), 'n/s/t/%/x');
});

test('-q/-z refusals and tolerated oddities', () => {
  assert.match(errorText(['-q', 'verify,once', 'localhost:80', '8080']), /^argument 2: 'verify,once': -q \(SSL client\) accepts 'verify' and 'verify,none'/);
  assert.match(errorText(['-z', 'tls1.3', 'localhost:80', '8080']), /^argument 2: 'tls1\.3': unknown SSL option for -z: expected one of default verbose/);
  assert.match(errorText(['-z', 'ssl3', 'localhost:80', '8080']), /unknown SSL option/);
  assert.match(errorText(['-z', 're10=x', 'localhost:80', '8080']), /unknown SSL option/);
  assert.match(errorText(['-z', 're-0=x', 'localhost:80', '8080']), /re-<n>= counts from the root CA: n is 1\.\.9/);
  assert.match(errorText(['-z', 're1=(', 'localhost:80', '8080']), /^argument 2: 're1=\(': regular expression "\(": unmatched '\(' at offset 0 \(at character 5\)$/);
  assert.match(errorText(['-z', 'depth=x', 'localhost:80', '8080']), /expected a depth after depth= \(an integer\)/);
  assert.match(errorText(['-z', 'key=', 'localhost:80', '8080']), /expected a file name after key=/);
  assert.match(errorText(['-q']), /^argument 1: '-q': expected an SSL client option \(see stone -h ssl\) after -q$/);
  const program = parseProgram(['-z', 'verify,whatever', '-z', 'crl_checkx', '-z', 'ignored', '-z', 'shutdown=later', '-z', 'depth=12', 'localhost:80', '8443/ssl']);
  const server = program.stones[0]?.settings.sslServer;
  assert.deepEqual([server?.verify, server?.crlCheck, server?.ignoreVerifyErrors, server?.shutdown, server?.depth], ['require', 'leaf', true, 'accurate', 9]);
  assert.equal(program.warnings.length, 5);
});

test("the README's stone line for a warpstone relay parses as expected", () => {
  const stone = only(['-q', 'verify', '-q', 'key=alice.pem', '-q', 'cert=alice.pem', '-q', 'CAfile=ca.pem', 'relay.example.org:7443/ssl,http', '8080', 'CONNECT web HTTP/1.1']);
  const request = destination(stone, 'http-request');
  assert.deepEqual(request.endpoint, { kind: 'inet', host: 'relay.example.org', port: { text: '7443', number: 7443 } });
  assert.equal(request.request.text, 'CONNECT web HTTP/1.1');
  const client = stone.settings.sslClient;
  assert.deepEqual([client?.verify, client?.keyFile, client?.certFile, client?.caFile, client?.serverName], ['peer', 'alice.pem', 'alice.pem', 'ca.pem', undefined]);
  assert.deepEqual(stone.xhosts, []);
});

test('option words that are names on Object.prototype are unknown words, not crashes', () => {
  for (const word of ['valueOf', 'constructor', 'toString', '__proto__', 'hasOwnProperty']) {
    const err = parseError(['-q', word, 'localhost:80', '8080']);
    assert.ok(err.message.includes(word), `${word}: ${err.message}`);
  }
});
