// Security with real clients: stompjs in Node over wss:// with a certificate
// made at test time, stompjs with a token in the subprotocol list, and
// Chromium connecting with ?access_token=.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Client } from '@stomp/stompjs';
import { WebSocket } from 'ws';
import { chromium } from 'playwright-core';
import { startBroker, until } from './broker.mjs';

const SECRET = 'interop-shared-secret-0123456789';
const dir = mkdtempSync(join(tmpdir(), 'stomphub-tls-'));
const cert = join(dir, 'cert.pem');
const key = join(dir, 'key.pem');

/** An HS256 JWT, signed by hand with node:crypto. */
function jwt(claims, secret = SECRET) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

const claims = (extra = {}) => ({
  sub: 'browser-user', aud: 'stomphub', exp: Math.floor(Date.now() / 1000) + 600,
  stomp_read: ['/topic/chat.#'], stomp_write: ['/topic/chat.#'], ...extra,
});

let tlsBroker;
let jwtBroker;
before(async () => {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
  tlsBroker = await startBroker({ config: `[[listeners]]\naddress = "127.0.0.1:0"\n[listeners.tls]\ncert_file = "${cert}"\nkey_file = "${key}"\n` });
  jwtBroker = await startBroker({
    config: `[auth]\nanonymous = "never"\n[auth.jwt]\nalgorithm = "HS256"\nsecret = "${SECRET}"\naudience = "stomphub"\n`,
  });
});
after(async () => { await tlsBroker?.stop(); await jwtBroker?.stop(); });

test('stompjs over wss:// trusting the test certificate', async () => {
  assert.match(tlsBroker.url, /^wss:\/\//);
  const url = tlsBroker.url.replace('127.0.0.1', 'localhost');
  const ca = readFileSync(cert);
  const factory = () => new WebSocket(url, ['v12.stomp', 'v11.stomp', 'v10.stomp'], { ca });
  const client = new Client({ webSocketFactory: factory, reconnectDelay: 0 });
  await new Promise((resolve, reject) => {
    client.onConnect = resolve;
    client.onWebSocketError = () => reject(new Error('TLS connection failed'));
    client.activate();
  });
  const received = [];
  client.subscribe('/topic/secure', (m) => received.push(m.body), { receipt: 'sub' });
  await new Promise((r) => client.watchForReceipt('sub', r));
  client.publish({ destination: '/topic/secure', body: 'over TLS' });
  await until(() => received.length === 1, 5000, 'message over TLS');
  assert.equal(received[0], 'over TLS');
  await client.deactivate();

  // Without trusting the certificate the connection must fail.
  const untrusted = new WebSocket(url, ['v12.stomp']);
  const failed = await new Promise((r) => { untrusted.on('error', () => r(true)); untrusted.on('open', () => r(false)); });
  assert.ok(failed, 'an unknown certificate is refused by the client');
});

test('stompjs with the token offered as a subprotocol beside v12.stomp', async () => {
  const offer = (token) => ['v12.stomp', 'v11.stomp', 'v10.stomp',
    `base64url.bearer.authorization.stomp.${Buffer.from(token).toString('base64url')}`];
  let socket;
  const connectWith = (token) => new Promise((resolve) => {
    const client = new Client({
      webSocketFactory: () => { socket = new WebSocket(jwtBroker.url, offer(token)); return socket; },
      reconnectDelay: 0,
    });
    client.onConnect = () => resolve({ client, error: null });
    client.onStompError = (frame) => resolve({ client, error: frame.headers.message });
    client.activate();
  });
  const good = await connectWith(jwt(claims()));
  assert.equal(good.error, null);
  assert.equal(socket.protocol, 'v12.stomp', 'only the STOMP subprotocol is answered');
  const received = [];
  good.client.subscribe('/topic/chat.token', (m) => received.push(m.body), { receipt: 'sub' });
  await new Promise((r) => good.client.watchForReceipt('sub', r));
  good.client.publish({ destination: '/topic/chat.token', body: 'with a subprotocol token' });
  await until(() => received.length === 1, 5000, 'message');
  await good.client.deactivate();

  const expired = await connectWith(jwt(claims({ exp: Math.floor(Date.now() / 1000) - 600 })));
  assert.equal(expired.error, 'authentication failed: token expired');
  await expired.client.deactivate();
});

test('Chromium connects with ?access_token= and is refused with a bad one', async () => {
  const server = createServer(async (request, response) => {
    const path = new URL(request.url, 'http://x').pathname;
    const files = { '/clients/browser/chat.html': 'text/html', '/node_modules/@stomp/stompjs/bundles/stomp.umd.min.js': 'text/javascript' };
    if (!files[path]) { response.writeHead(404).end(); return; }
    response.writeHead(200, { 'content-type': files[path] });
    response.end(await readFile(resolve('.' + path)));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    const open = (token) => page.goto(`http://127.0.0.1:${server.address().port}/clients/browser/chat.html?room=secure&broker=${
      encodeURIComponent(`${jwtBroker.url}?access_token=${token}`)}`);
    await open(jwt(claims()));
    await page.waitForSelector('#status[data-state="connected"]', { timeout: 10_000 });
    await page.fill('#text', 'authenticated hello');
    await page.click('#send-button');
    await page.waitForSelector('#messages li:has-text("authenticated hello")', { timeout: 10_000 });

    await open(jwt(claims(), 'the-wrong-secret-for-this-broker'));
    await page.waitForSelector('#status:has-text("authentication failed: invalid signature")', { timeout: 10_000 });
  } finally {
    await browser.close();
    server.close();
  }
});

test('Chromium: on the default config no foreign page gets in, a page of this machine does', async () => {
  const broker = await startBroker();
  // A page that tries the broker itself and from a sandboxed frame (Origin
  // `null`, which any site can create); it reports 'open' or 'refused' for each.
  const probe = (label) => `
    const ws = new WebSocket(${JSON.stringify(broker.url)}, ['v12.stomp']);
    const report = (result) => parent.postMessage({ label: ${JSON.stringify(label)}, result }, '*');
    ws.onopen = () => { report('open'); ws.close(); };
    ws.onerror = () => report('refused');`;
  const html = `<!doctype html><html><body><script>
    window.results = {};
    window.addEventListener('message', (e) => { window.results[e.data.label] = e.data.result; });
    ${probe('page').replace('parent.postMessage', 'window.postMessage')}
  </script><iframe sandbox="allow-scripts" srcdoc="${`<script>${probe('sandboxed')}</script>`.replace(/"/g, '&quot;')}"></iframe></body></html>`;
  const server = createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end(html);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = server.address().port;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    // evil.example resolves to this machine: a foreign origin served locally.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--host-resolver-rules=MAP evil.example 127.0.0.1'],
  });
  try {
    const page = await browser.newPage();
    const results = async (url) => {
      await page.goto(url);
      await page.waitForFunction(() => Object.keys(window.results).length === 2, null, { timeout: 10_000 });
      return page.evaluate(() => window.results);
    };
    assert.deepEqual(await results(`http://localhost:${port}/`), { page: 'open', sandboxed: 'refused' });
    assert.deepEqual(await results(`http://evil.example:${port}/`), { page: 'refused', sandboxed: 'refused' });
  } finally {
    await browser.close();
    server.close();
    await broker.stop();
  }
});
