// The live-feed demo apps (clients/demos) end to end in headless Chromium,
// driven by playwright-core, against the real broker with the demo config:
// the ticker fills 200 rows from retained values on a late join and its
// "slow client" switch gets at most one update per symbol a second from the
// broker (x-max-rate), the scores
// page resumes after a broker restart without losing an event, the chat
// shows the last 50 messages on join and a <script> message as text.
// Screenshots go to target/demo-screenshots (printed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { createServer as createTcpServer, connect as tcpConnect } from 'node:net';
import { resolve } from 'node:path';
import { chromium } from 'playwright-core';
import { connectClient, binary } from './broker.mjs';
import { startDemos } from '../../clients/demos/run.mjs';

const shots = resolve('target/demo-screenshots');
let demos;
let browser;

before(async () => {
  mkdirSync(shots, { recursive: true });
  console.log(`demo screenshots in ${shots}`);
  demos = await startDemos({ bin: binary });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  await browser?.close();
  await demos?.stop();
});

/**
 * A TCP proxy in front of the broker whose drop(ms) cuts every connection
 * and refuses new ones for `ms`: a network drop as the page sees it.
 */
function startProxy(targetPort) {
  const sockets = new Set();
  let down = false;
  const server = createTcpServer((client) => {
    if (down) { client.destroy(); return; }
    const upstream = tcpConnect(targetPort, '127.0.0.1');
    const close = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', close);
      socket.on('close', close);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r({
    url: `ws://127.0.0.1:${server.address().port}${new URL(demos.brokerURL).pathname}`,
    drop(ms) {
      down = true;
      for (const socket of sockets) socket.destroy();
      setTimeout(() => { down = false; }, ms);
    },
    close() { down = true; for (const socket of sockets) socket.destroy(); server.close(); },
  })));
}

async function newPage(url) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(url);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 10_000 });
  return { page, errors };
}

test('the ticker streams live, and a late joiner fills all 200 rows from retained values', async () => {
  const live = await newPage(demos.pages.ticker);
  await live.page.waitForFunction(() => document.querySelectorAll('#rows tr').length === 200, null, { timeout: 10_000 });
  // About 1 000 updates a second are published; hundreds a second reach the
  // page even when a busy machine slows headless Chromium down.
  await live.page.waitForFunction(() => Number(document.getElementById('rate').textContent.replace(/\D/g, '')) > 100, null, { timeout: 10_000 });
  await live.page.screenshot({ path: `${shots}/ticker.png` });
  await live.page.check('#slow');
  assert.equal(await live.page.isVisible('#slow-notice'), true);
  // The switch subscribes again with x-max-rate:1: the broker sends each
  // symbol's live price at most once a second (the first at once), where
  // the publisher ticks each about 5 times a second. A page that only
  // repainted less often would count every tick here.
  await live.page.waitForFunction(() => {
    const stats = window.tickerSlowStats();
    return stats.seconds >= 3 && stats.symbols >= 150;
  }, null, { timeout: 15_000 });
  const slow = await live.page.evaluate(() => window.tickerSlowStats());
  assert.ok(slow.maxTicks <= Math.ceil(slow.seconds) + 1,
    `a symbol got ${slow.maxTicks} updates in ${slow.seconds.toFixed(1)} s with x-max-rate:1`);
  await live.page.screenshot({ path: `${shots}/ticker-slow.png` });
  assert.deepEqual(live.errors, []);
  await live.page.close();

  // With the publisher stopped, only retained values can fill the table.
  await demos.publishers.ticker.stop();
  const late = await newPage(demos.pages.ticker);
  await late.page.waitForFunction(() => document.querySelectorAll('#rows tr').length === 200
    && document.getElementById('retained-count').textContent === '200', null, { timeout: 5_000 });
  const prices = await late.page.$$eval('#rows td.last', (cells) => cells.map((c) => c.textContent));
  assert.equal(prices.length, 200);
  assert.ok(prices.every((p) => /^\d+\.\d\d$/.test(p)), 'every row has a price');
  await late.page.screenshot({ path: `${shots}/ticker-late-join.png` });
  assert.deepEqual(late.errors, []);
  await late.page.close();
});

test('the scores page shows who is watching and resumes after a network drop and a broker restart without losing an event', async () => {
  const proxy = await startProxy(new URL(demos.brokerURL).port);
  const first = await newPage(`${demos.pages.scores}?broker=${encodeURIComponent(proxy.url)}`);
  await first.page.waitForFunction(() => [...document.querySelectorAll('.game .minute')].every((m) => m.textContent !== '–'), null, { timeout: 10_000 });
  await first.page.waitForSelector('.game[data-game="game1"] .watching:text("1 watching")', { timeout: 5_000 });
  const second = await newPage(demos.pages.scores);
  await first.page.waitForSelector('.game[data-game="game1"] .watching:text("2 watching")', { timeout: 5_000 });
  await second.page.close();
  await first.page.waitForSelector('.game[data-game="game1"] .watching:text("1 watching")', { timeout: 5_000 });

  // A network drop of the page only: the publisher goes on, the page catches up.
  proxy.drop(3000);
  await first.page.waitForSelector('#status[data-state="reconnecting"]', { timeout: 5_000 });
  await first.page.waitForSelector('#resume-notice[data-resumes="1"][data-recovered="true"]', { timeout: 15_000 });
  assert.ok(Number(await first.page.getAttribute('#resume-notice', 'data-caught-up')) > 0, 'missed events were caught up');
  assert.equal(await first.page.textContent('#lost-count'), '0');
  await first.page.screenshot({ path: `${shots}/scores-after-drop.png` });

  const before = Number(await first.page.textContent('#event-count'));
  await demos.restartBroker(2000);
  await first.page.waitForSelector('#resume-notice[data-resumes="2"][data-recovered="true"]', { timeout: 20_000 });
  await first.page.waitForSelector('#status[data-state="connected"]', { timeout: 5_000 });
  // Events keep coming after the restart, and none was lost across it.
  await first.page.waitForFunction((n) => Number(document.getElementById('event-count').textContent.replace(/\D/g, '')) > n + 4, before, { timeout: 10_000 });
  assert.equal(await first.page.textContent('#lost-count'), '0');
  assert.match(await first.page.textContent('#resume-notice'), /resumed \(x-recovered\)/);
  await first.page.screenshot({ path: `${shots}/scores-resumed.png` });
  assert.deepEqual(first.errors, []);
  await first.page.close();
  proxy.close();
});

test('the chat shows the last 50 messages on join, presence, and a <script> message as text', async () => {
  const node = await connectClient(demos.brokerURL);
  for (let i = 1; i <= 60; i++) {
    const receipt = i === 60 ? 'all-sent' : undefined;
    node.publish({ destination: '/topic/chat.test', headers: receipt ? { receipt } : {}, body: JSON.stringify({ name: 'bot', text: `message ${i}` }) });
  }
  await new Promise((r) => node.watchForReceipt('all-sent', r));

  const { page, errors } = await newPage(`${demos.pages.chat}?room=test`);
  await page.waitForSelector('#messages[data-history]', { timeout: 10_000 });
  const texts = await page.$$eval('#messages li.message .text', (cells) => cells.map((c) => c.textContent));
  assert.equal(texts.length, 50);
  assert.equal(texts[0], 'message 11');
  assert.equal(texts[49], 'message 60');
  await page.waitForSelector('#presence:text("1 online")', { timeout: 5_000 });
  const other = await newPage(`${demos.pages.chat}?room=test`);
  await page.waitForSelector('#presence:text("2 online")', { timeout: 5_000 });

  const evil = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">';
  node.publish({ destination: '/topic/chat.test', body: JSON.stringify({ name: '<b>mallory</b>', text: evil }) });
  await page.waitForFunction((t) => [...document.querySelectorAll('#messages li.message .text')].some((c) => c.textContent === t), evil, { timeout: 5_000 });
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.equal(await page.locator('#messages script, #messages img, #messages b').count(), 0);

  // And the page's own message reaches the other page.
  await page.fill('#name', 'alice');
  await page.fill('#text', 'hello from chromium');
  await page.click('#send-button');
  await other.page.waitForSelector('#messages li.message:has-text("hello from chromium")', { timeout: 5_000 });
  await page.waitForTimeout(300);
  await page.screenshot({ path: `${shots}/chat.png` });
  assert.deepEqual(errors, []);
  assert.deepEqual(other.errors, []);
  await other.page.close();
  await page.close();
  await node.deactivate();
});
