// The admin dashboard (GET / on the admin listener) in headless Chromium:
// it renders, its numbers move with traffic (a screenshot is saved as
// target/dashboard.png), and it stays live and bounded with 1 000 queues.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { Client } from '@stomp/stompjs';
import { startBroker, until } from './broker.mjs';

let broker;
let browser;
before(async () => {
  broker = await startBroker();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  await browser?.close();
  await broker?.stop();
});

test('the dashboard renders and its numbers move with traffic', async () => {
  const admin = await broker.admin;
  const page = await browser.newPage({ viewport: { width: 1100, height: 1000 } });
  // The page needs nothing but the broker: any other request is a failure.
  const outside = [];
  page.on('request', (request) => {
    if (!request.url().startsWith(admin)) outside.push(request.url());
  });
  await page.goto(admin + '/');
  await page.waitForSelector('#status[data-state="live"]', { timeout: 10_000 });
  assert.equal(await page.textContent('#connections'), '0');

  // Traffic: a subscriber, a publisher, and messages left in a queue.
  const subscriber = new Client({ brokerURL: broker.url, reconnectDelay: 0 });
  await new Promise((r) => { subscriber.onConnect = r; subscriber.activate(); });
  let received = 0;
  subscriber.subscribe('/topic/dash.prices', () => { received += 1; });
  const publisher = new Client({ brokerURL: broker.url, reconnectDelay: 0 });
  await new Promise((r) => { publisher.onConnect = r; publisher.activate(); });
  for (let i = 0; i < 5; i += 1) publisher.publish({ destination: '/queue/dash.jobs', body: `job ${i}` });
  const pump = setInterval(() => {
    for (let i = 0; i < 50; i += 1) publisher.publish({ destination: '/topic/dash.prices', body: 'tick' });
  }, 50);
  try {
    await page.waitForFunction(() => document.querySelector('#connections').textContent === '2', null, { timeout: 10_000 });
    await page.waitForFunction(() => Number(document.querySelector('#rate-published').textContent.replace(/[^0-9.]/g, '')) > 0, null, { timeout: 10_000 });
    await page.waitForSelector('#queues td:has-text("/queue/dash.jobs")', { timeout: 10_000 });
    const depth = await page.textContent('#queues tbody tr:first-child td:nth-child(2)');
    assert.equal(depth, '5');
    await until(() => received > 0, 5000, 'the subscriber receives');
    await page.waitForFunction(() => document.querySelector('#rate-delivered').textContent !== '–', null, { timeout: 10_000 });
    // Two rate readings draw a line.
    await page.waitForFunction(() => (document.querySelector('#chart-published polyline')?.getAttribute('points') ?? '').includes(' '), null, { timeout: 10_000 });
    const rows = await page.$$eval('#conns tbody tr', (trs) => trs.length);
    assert.equal(rows, 2);
    mkdirSync('target', { recursive: true });
    await page.screenshot({ path: 'target/dashboard.png', fullPage: true });
  } finally {
    clearInterval(pump);
    await subscriber.deactivate();
    await publisher.deactivate();
  }
  assert.deepEqual(outside, [], 'no request leaves the broker');
});

test('the dashboard stays live and bounded with 1 000 queues', async () => {
  const admin = await broker.admin;
  const publisher = new Client({ brokerURL: broker.url, reconnectDelay: 0 });
  await new Promise((r) => { publisher.onConnect = r; publisher.activate(); });
  try {
    // 1 000 queues, queue many.N holding N % 7 + 1 messages.
    for (let n = 0; n < 1000; n += 1) {
      for (let k = 0; k <= n % 7; k += 1) publisher.publish({ destination: `/queue/many.${n}`, body: `m${k}` });
    }
    const receipt = 'all-sent';
    const done = new Promise((r) => publisher.watchForReceipt(receipt, r));
    publisher.publish({ destination: '/queue/many.last', body: 'x', headers: { receipt } });
    await done;
    const listed = await (await fetch(admin + '/api/queues')).json();
    assert.ok(listed.queues.length >= 1000, `the API lists every queue: ${listed.queues.length}`);

    const page = await browser.newPage({ viewport: { width: 1100, height: 1000 } });
    const started = Date.now();
    await page.goto(admin + '/');
    await page.waitForSelector('#status[data-state="live"]', { timeout: 10_000 });
    // The table shows the deepest queues, a bounded number of rows.
    await page.waitForFunction(() => document.querySelectorAll('#queues tbody tr').length > 0, null, { timeout: 10_000 });
    const rows = await page.$$eval('#queues tbody tr', (trs) => trs.length);
    assert.ok(rows <= 20, `${rows} rows`);
    assert.equal(await page.textContent('#queues tbody tr:first-child td:nth-child(2)'), '7');
    // It keeps refreshing: two more updates within the next 10 s.
    const first = await page.textContent('#status');
    await page.waitForFunction((t) => document.querySelector('#status').textContent !== t, first, { timeout: 10_000 });
    const second = await page.textContent('#status');
    await page.waitForFunction((t) => document.querySelector('#status').textContent !== t, second, { timeout: 10_000 });
    assert.equal(await page.getAttribute('#status', 'data-state'), 'live');
    console.log(`dashboard with 1 000 queues: live and refreshing ${Date.now() - started} ms after opening`);
    await page.close();
  } finally {
    await publisher.deactivate();
  }
});
