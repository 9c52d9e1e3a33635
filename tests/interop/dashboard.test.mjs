// The admin dashboard (GET / on the admin listener) in headless Chromium:
// it renders, and its numbers move with traffic. A screenshot is saved as
// target/dashboard.png.
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
