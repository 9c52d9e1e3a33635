// Publishes a price tick once a second with the real @stomp/stompjs.
// usage: node clients/node/publisher.mjs [ws://127.0.0.1:61614/ws] [/topic/prices.acme] [count]
import { Client } from '@stomp/stompjs';
import { WebSocket } from 'ws';

Object.assign(globalThis, { WebSocket });

const brokerURL = process.argv[2] ?? 'ws://127.0.0.1:61614/ws';
const destination = process.argv[3] ?? '/topic/prices.acme';
const count = Number(process.argv[4] ?? 10);

const client = new Client({
  brokerURL,
  onConnect: async () => {
    for (let i = 1; i <= count; i++) {
      const price = (100 + Math.sin(i) * 5).toFixed(2);
      client.publish({ destination, body: JSON.stringify({ seq: i, price }), headers: { 'content-type': 'application/json' } });
      console.log(`sent ${i}/${count} to ${destination}: ${price}`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    await client.deactivate();
  },
  onStompError: (frame) => console.error(`broker error: ${frame.headers.message}`),
});
client.activate();
