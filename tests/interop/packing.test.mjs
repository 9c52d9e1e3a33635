// Packed delivery with the real @stomp/stompjs: a client that sends CONNECT
// `x-pack-frames:true` may get several STOMP frames in one WebSocket
// message; stompjs's parser must hand every one of them over, in order.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { connectClient, startBroker, until } from './broker.mjs';

const MESSAGES = 2000;
const DESTINATION = '/topic/interop.packing';

let broker;
before(async () => {
  // One worker thread: the publishing session queues the whole burst
  // before the subscriber's writer runs, so the writer has many frames to pack.
  broker = await startBroker({ config: '[runtime]\nworker_threads = 1\n' });
});
after(async () => { await broker.stop(); });

/** A stompjs client whose WebSocket counts the STOMP frames of each message. */
async function countingClient(connectHeaders) {
  const perMessage = [];
  const client = await connectClient(broker.url, {
    connectHeaders,
    webSocketFactory: () => {
      const ws = new WebSocket(broker.url, ['v12.stomp', 'v11.stomp', 'v10.stomp']);
      ws.addEventListener('message', (event) => {
        const data = typeof event.data === 'string' ? Buffer.from(event.data) : Buffer.from(event.data);
        perMessage.push(data.filter((byte) => byte === 0).length);
      });
      return ws;
    },
  });
  return { client, perMessage };
}

/** Sends MESSAGES SENDs in one WebSocket message. */
async function publishBurst() {
  const ws = new WebSocket(broker.url, ['v12.stomp']);
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const connected = new Promise((resolve) => ws.once('message', resolve));
  ws.send('CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0');
  await connected;
  let burst = '';
  for (let n = 0; n < MESSAGES; n++) burst += `SEND\ndestination:${DESTINATION}\n\nmessage ${n}\0`;
  ws.send(burst);
  return ws;
}

test('stompjs takes several frames from one WebSocket message, in order, when it asked for them', async () => {
  const packed = await countingClient({ 'x-pack-frames': 'true' });
  assert.equal(packed.client.connectedVersion, '1.2');
  const plain = await countingClient({});
  const received = { packed: [], plain: [] };
  for (const [name, { client }] of [['packed', packed], ['plain', plain]]) {
    await new Promise((resolve) => {
      client.watchForReceipt(`ready-${name}`, resolve);
      client.subscribe(DESTINATION, (message) => received[name].push(message.body), { receipt: `ready-${name}` });
    });
  }
  const publisher = await publishBurst();
  await until(() => received.packed.length === MESSAGES && received.plain.length === MESSAGES, 20000, 'every message');
  const expected = Array.from({ length: MESSAGES }, (_, n) => `message ${n}`);
  assert.deepEqual(received.packed, expected);
  assert.deepEqual(received.plain, expected);
  assert.ok(Math.max(...packed.perMessage) > 1, 'the broker packed frames for the client that asked');
  assert.equal(Math.max(...plain.perMessage), 1, 'one frame per message for the client that did not ask');
  publisher.close();
  await packed.client.deactivate();
  await plain.client.deactivate();
});
