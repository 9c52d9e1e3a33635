// The browser chat page (clients/browser/chat.html) in headless Chromium,
// driven by playwright-core, talking to the real broker.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { chromium } from 'playwright-core';
import { Client } from '@stomp/stompjs';
import { startBroker, until } from './broker.mjs';

// Only the page and the stompjs bundle it loads are served.
const FILES = {
  '/clients/browser/chat.html': 'text/html',
  '/node_modules/@stomp/stompjs/bundles/stomp.umd.min.js': 'text/javascript',
};

let broker;
let server;
let browser;
before(async () => {
  broker = await startBroker();
  server = createServer(async (request, response) => {
    const path = new URL(request.url, 'http://x').pathname;
    if (!FILES[path]) { response.writeHead(404).end(); return; }
    response.writeHead(200, { 'content-type': FILES[path] });
    response.end(await readFile(resolve('.' + path)));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  await browser?.close();
  server?.close();
  await broker?.stop();
});

test('the chat page round-trips a message in Chromium and meets a Node client', async () => {
  const page = await browser.newPage();
  const pageUrl = `http://127.0.0.1:${server.address().port}/clients/browser/chat.html?room=test&broker=${encodeURIComponent(broker.url)}`;
  await page.goto(pageUrl);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 10_000 });

  // A Node stompjs client in the same room sees what the browser says, and vice versa.
  const node = new Client({ brokerURL: broker.url, reconnectDelay: 0 });
  const heard = [];
  await new Promise((r) => { node.onConnect = r; node.activate(); });
  node.subscribe('/topic/chat.test', (m) => heard.push(JSON.parse(m.body)), { receipt: 'ready' });
  await new Promise((r) => node.watchForReceipt('ready', r));

  await page.fill('#name', 'alice');
  await page.fill('#text', 'hello from chromium');
  await page.click('#send-button');
  await page.waitForSelector('#messages li:has-text("alice: hello from chromium")', { timeout: 10_000 });
  await until(() => heard.length === 1, 5000, 'node client hears the browser');
  assert.deepEqual(heard[0], { name: 'alice', text: 'hello from chromium' });

  node.publish({ destination: '/topic/chat.test', body: JSON.stringify({ name: 'bob', text: 'hi from node' }) });
  await page.waitForSelector('#messages li:has-text("bob: hi from node")', { timeout: 10_000 });
  assert.equal(await page.locator('#messages li').count(), 2);
  await node.deactivate();
  await page.close();
});
