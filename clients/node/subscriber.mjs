// Subscribes to a topic pattern with the real @stomp/stompjs and prints what arrives.
// usage: node clients/node/subscriber.mjs [ws://127.0.0.1:61614/ws] [/topic/prices.#]
import { Client } from '@stomp/stompjs';
import { WebSocket } from 'ws';

// Node 20 has no global WebSocket; stompjs uses the global one, as in a browser.
Object.assign(globalThis, { WebSocket });

const brokerURL = process.argv[2] ?? 'ws://127.0.0.1:61614/ws';
const destination = process.argv[3] ?? '/topic/prices.#';

const client = new Client({
  brokerURL,
  reconnectDelay: 2000,
  onConnect: () => {
    // stompjs does not restore subscriptions after a reconnect: do it here.
    client.subscribe(destination, (message) => {
      console.log(`${message.headers.destination}: ${message.body}`);
    });
    console.log(`subscribed to ${destination} on ${brokerURL}`);
  },
  onStompError: (frame) => console.error(`broker error: ${frame.headers.message}`),
});
client.activate();
