// Runs the three live-feed demos with one command:
//   node clients/demos/run.mjs
// starts the broker (STOMPHUB_BIN, or target/release/stomphub) with
// clients/demos/broker.toml, the ticker and scores publishers and a small
// static server for the pages, all on free loopback ports, and prints the
// URLs. Also imported by tests/interop/demos.test.mjs.
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startScores, startTicker } from './publishers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');

const TYPES = { html: 'text/html; charset=utf-8', css: 'text/css', js: 'text/javascript', svg: 'image/svg+xml' };

/**
 * Serves only the files of clients/demos/web, the stompjs bundle from
 * node_modules (no CDN) and /config.js, which tells the pages the broker URL.
 */
export function startStatic(brokerURL) {
  const files = new Map();
  for (const name of readdirSync(join(here, 'web'))) files.set(`/${name}`, join(here, 'web', name));
  files.set('/', join(here, 'web', 'index.html'));
  files.set('/vendor/stomp.umd.min.js', join(root, 'node_modules/@stomp/stompjs/bundles/stomp.umd.min.js'));
  const server = createServer(async (request, response) => {
    const path = new URL(request.url, 'http://x').pathname;
    if (path === '/config.js') {
      response.writeHead(200, { 'content-type': TYPES.js, 'cache-control': 'no-store' });
      response.end(`window.DEMO_CONFIG = ${JSON.stringify({ brokerURL })};\n`);
      return;
    }
    const file = files.get(path);
    if (!file) { response.writeHead(404, { 'content-type': 'text/plain' }).end('not found'); return; }
    try {
      const body = await readFile(file);
      response.writeHead(200, { 'content-type': TYPES[file.split('.').pop()] ?? 'application/octet-stream' });
      response.end(body);
    } catch {
      response.writeHead(500, { 'content-type': 'text/plain' }).end('cannot read file');
    }
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

/**
 * Starts the broker binary with the demo config on `listen` and a data
 * directory `dataDir`; resolves with { url, stop() } once it listens.
 */
export function startDemoBroker({ bin, listen = '127.0.0.1:0', dataDir }) {
  const args = ['--listen', listen, '--admin-listen', '127.0.0.1:0', '--data-dir', dataDir, '--config', join(here, 'broker.toml')];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_LOG: 'warn', ...process.env } });
  let stderr = '';
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`broker did not start: ${stderr}`)), 10_000);
    let stdout = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      const match = stdout.match(/listening on (wss?:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolvePromise({
          url: match[1],
          stop: () => new Promise((done) => {
            if (child.exitCode !== null) return done(child.exitCode);
            child.once('exit', done);
            child.kill('SIGTERM');
          }),
        });
      }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`broker exited with ${code}: ${stderr}`)); });
  });
}

/**
 * Starts everything. Resolves with { brokerURL, publishers, pages: { index, ticker,
 * scores, chat }, restartBroker(), stop() }; restartBroker stops the broker
 * and starts it again on the same port and data directory.
 */
export async function startDemos({ bin = process.env.STOMPHUB_BIN ?? join(root, 'target/release/stomphub'), dataDir, tickerRate = 1000 } = {}) {
  if (!existsSync(resolve(bin))) {
    throw new Error(`no broker binary at ${resolve(bin)}: run \`cargo build --release\` or set STOMPHUB_BIN`);
  }
  const data = dataDir ?? join(mkdtempSync(join(tmpdir(), 'stomphub-demos-')), 'data');
  let broker = await startDemoBroker({ bin: resolve(bin), dataDir: data });
  const brokerURL = broker.url;
  const listen = `127.0.0.1:${new URL(brokerURL).port}`;
  const ticker = startTicker(brokerURL, { rate: tickerRate });
  const scores = startScores(brokerURL);
  const server = await startStatic(brokerURL);
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    brokerURL,
    publishers: { ticker, scores },
    pages: { index: `${base}/`, ticker: `${base}/ticker.html`, scores: `${base}/scores.html`, chat: `${base}/chat.html` },
    async restartBroker(downMs = 0) {
      await broker.stop();
      if (downMs) await new Promise((r) => setTimeout(r, downMs));
      broker = await startDemoBroker({ bin: resolve(bin), listen, dataDir: data });
    },
    async stop() {
      await Promise.allSettled([ticker.stop(), scores.stop()]);
      server.close();
      server.closeAllConnections?.();
      await broker.stop();
    },
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let demos;
  try {
    demos = await startDemos();
  } catch (error) {
    console.error(error.message);
    process.exit(1);
  }
  console.log(`broker     ${demos.brokerURL}`);
  console.log(`demos      ${demos.pages.index}`);
  console.log(`  ticker   ${demos.pages.ticker}`);
  console.log(`  scores   ${demos.pages.scores}`);
  console.log(`  chat     ${demos.pages.chat}`);
  console.log('Ctrl-C stops everything.');
  const stop = async () => { await demos.stop(); process.exit(0); };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
