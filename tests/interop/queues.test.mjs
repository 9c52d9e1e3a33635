// Queues with the real @stomp/stompjs: ack(), nack(), transactions and
// temp-queue request/reply, against the real broker binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connectClient, startBroker, until } from './broker.mjs';

let broker;
before(async () => {
  broker = await startBroker({ config: '[queues]\nredelivery_delay = "50ms"\nmax_deliveries = 2\n' });
});
after(async () => { await broker.stop(); });

const connect = (options = {}) => connectClient(broker.url, options);

/** Subscribes (confirmed by a receipt) and returns the array messages land in. */
async function collect(client, destination, headers = {}, onMessage = () => {}) {
  const messages = [];
  const receipt = `ready-${destination}-${Math.random()}`;
  client.watchForReceipt(receipt, () => messages.ready = true);
  client.subscribe(destination, (m) => { messages.push(m); onMessage(m); }, { ...headers, receipt });
  await until(() => messages.ready, 5000, 'subscription receipt');
  return messages;
}

test('competing stompjs consumers get each queue message exactly once', async () => {
  const consumers = await Promise.all([connect(), connect(), connect()]);
  const inboxes = await Promise.all(consumers.map((c) => collect(c, '/queue/js.work', { ack: 'client-individual' }, (m) => m.ack())));
  const producer = await connect();
  for (let i = 0; i < 90; i++) producer.publish({ destination: '/queue/js.work', body: String(i) });
  await until(() => inboxes.reduce((n, box) => n + box.length, 0) === 90, 10000, '90 deliveries');
  const bodies = inboxes.flat().map((m) => m.body);
  assert.equal(new Set(bodies).size, 90, 'no duplicates');
  assert.ok(inboxes.every((box) => box.length > 0), 'every consumer got work');
  await Promise.all([...consumers, producer].map((c) => c.deactivate()));
});

test('nack() redelivers with the flag, then dead-letters', async () => {
  const consumer = await connect();
  const inbox = await collect(consumer, '/queue/js.poison', { ack: 'client-individual' }, (m) => m.nack());
  consumer.publish({ destination: '/queue/js.poison', body: 'bad' });
  await until(() => inbox.length === 2, 5000, 'two deliveries');
  assert.equal(inbox[0].headers.redelivered, undefined);
  assert.equal(inbox[1].headers.redelivered, 'true');
  const dlq = await collect(consumer, '/queue/js.poison.dlq');
  await until(() => dlq.length === 1, 5000, 'dead letter');
  assert.equal(dlq[0].body, 'bad');
  assert.equal(dlq[0].headers['x-dead-letter-reason'], 'max-deliveries');
  await consumer.deactivate();
});

test('begin/commit/abort: only committed sends arrive; an aborted ack leaves the message unacked', async () => {
  const consumer = await connect();
  const inbox = await collect(consumer, '/queue/js.tx');
  const producer = await connect();
  const tx = producer.begin();
  producer.publish({ destination: '/queue/js.tx', body: 'committed', headers: { transaction: tx.id } });
  const aborted = producer.begin();
  producer.publish({ destination: '/queue/js.tx', body: 'aborted', headers: { transaction: aborted.id } });
  aborted.abort();
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(inbox.length, 0, 'nothing before COMMIT');
  tx.commit();
  await until(() => inbox.length === 1, 5000, 'committed message');
  assert.equal(inbox[0].body, 'committed');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(inbox.length, 1, 'the aborted one never arrives');

  const acker = await connect();
  const held = await collect(acker, '/queue/js.txack', { ack: 'client-individual' });
  producer.publish({ destination: '/queue/js.txack', body: 'held' });
  await until(() => held.length === 1, 5000, 'held message');
  const ackTx = acker.begin();
  held[0].ack({ transaction: ackTx.id });
  ackTx.abort();
  await acker.deactivate();
  const again = await collect(producer, '/queue/js.txack');
  await until(() => again.length === 1, 5000, 'redelivery after aborted ack');
  assert.equal(again[0].headers.redelivered, 'true');
  await Promise.all([consumer, producer].map((c) => c.deactivate()));
});

test('temp-queue request/reply between two stompjs clients', async () => {
  const responder = await connect();
  await collect(responder, '/queue/js.rpc', {}, (request) => {
    responder.publish({ destination: request.headers['reply-to'], body: `echo: ${request.body}` });
  });
  const replies = [];
  const requester = await connect({ onUnhandledMessage: (m) => replies.push(m) });
  requester.publish({ destination: '/queue/js.rpc', body: 'ping', headers: { 'reply-to': '/temp-queue/rpc' } });
  await until(() => replies.length === 1, 5000, 'reply');
  assert.equal(replies[0].body, 'echo: ping');
  assert.equal(replies[0].headers.subscription, '/temp-queue/rpc');
  await Promise.all([responder, requester].map((c) => c.deactivate()));
});
