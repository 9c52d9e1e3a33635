// Live feeds with an unmodified @stomp/stompjs client: the resume pattern
// of docs/live-feeds.md (keep the last x-offset and x-epoch, pass them from
// onConnect) survives a forced disconnect with no gap and no duplicate.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@stomp/stompjs';
import { connectClient, startBroker, until } from './broker.mjs';

let broker;
before(async () => {
  broker = await startBroker({
    config: '[[topics.rules]]\npattern = "/topic/score.*"\nhistory = 100\nretain = "last"\n',
  });
});
after(async () => { await broker.stop(); });

/** Publishes `body` and resolves once the broker has routed it. */
function publishConfirmed(client, destination, body) {
  const receipt = `p-${destination}-${body}`;
  const done = new Promise((resolve) => client.watchForReceipt(receipt, resolve));
  client.publish({ destination, body, headers: { receipt } });
  return done;
}

test('stompjs resumes after a forced disconnect with every missed message, in order', async () => {
  const destination = '/topic/score.game42';
  const publisher = await connectClient(broker.url);
  // The state a page keeps per destination.
  const position = { offset: null, epoch: null };
  const received = [];
  const receipts = [];
  let connects = 0;
  let closes = 0;
  // The reconnect waits for `away` to open (stompjs awaits beforeConnect),
  // so what is published "while away" is, however slowly it goes.
  let comeBack = () => {};
  let away = Promise.resolve();
  const fan = new Client({ brokerURL: broker.url, reconnectDelay: 1000, beforeConnect: () => away });
  fan.onConnect = () => {
    connects += 1;
    const receipt = `sub-${connects}`;
    fan.watchForReceipt(receipt, (frame) => receipts.push(frame.headers));
    const start = position.epoch === null
      ? { 'x-stream-offset': 'next' }
      : { 'x-stream-offset': `offset=${position.offset + 1}`, 'x-epoch': position.epoch };
    fan.subscribe(destination, (message) => {
      received.push({ body: message.body, offset: Number(message.headers['x-offset']) });
      position.offset = Number(message.headers['x-offset']);
      position.epoch = message.headers['x-epoch'];
    }, { ...start, receipt });
  };
  fan.onWebSocketClose = () => { closes += 1; };
  fan.activate();
  await until(() => receipts.length === 1, 5000, 'first subscription');

  for (let n = 1; n <= 5; n += 1) await publishConfirmed(publisher, destination, String(n));
  await until(() => received.length === 5, 5000, 'five live messages');

  // A network blip: the socket goes; stompjs reconnects after its delay.
  away = new Promise((resolve) => { comeBack = resolve; });
  fan.forceDisconnect();
  await until(() => closes === 1, 5000, 'the forced close');
  for (let n = 6; n <= 10; n += 1) await publishConfirmed(publisher, destination, String(n));
  assert.equal(connects, 1, 'published while the subscriber was away');
  comeBack();

  await until(() => receipts.length === 2, 10000, 'the resumed subscription');
  assert.equal(receipts[1]['x-recovered'], 'true');
  for (let n = 11; n <= 12; n += 1) await publishConfirmed(publisher, destination, String(n));
  await until(() => received.length >= 12, 5000, 'missed and live messages');

  assert.deepEqual(received.map((m) => m.body), Array.from({ length: 12 }, (_, i) => String(i + 1)));
  const offsets = received.map((m) => m.offset);
  assert.ok(offsets.every((o, i) => i === 0 || o === offsets[i - 1] + 1), `offsets ${offsets}`);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(received.length, 12, 'no duplicate');
  await fan.deactivate();
  await publisher.deactivate();
});

test('stompjs learns from x-recovered:false when its epoch is stale, and gets the last value', async () => {
  const destination = '/topic/score.game43';
  const publisher = await connectClient(broker.url);
  await publishConfirmed(publisher, destination, 'kick-off');
  await publishConfirmed(publisher, destination, '1-0');
  const fan = await connectClient(broker.url);
  const received = [];
  const receipt = new Promise((resolve) => fan.watchForReceipt('stale', resolve));
  fan.subscribe(destination, (message) => received.push(message), {
    'x-stream-offset': 'offset=1', 'x-epoch': 'from-before-a-restart', receipt: 'stale',
  });
  const frame = await receipt;
  assert.equal(frame.headers['x-recovered'], 'false');
  await until(() => received.length === 1, 5000, 'the last value');
  assert.equal(received[0].body, '1-0');
  assert.equal(received[0].headers['x-retained'], 'true');
  assert.equal(received[0].headers['x-recovered'], 'false');
  await fan.deactivate();
  await publisher.deactivate();
});
