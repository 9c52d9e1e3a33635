// Node publishers of the live-feed demos, using the real @stomp/stompjs:
// the stock ticker (200 symbols, ~1 000 updates/s in total) and the live
// scores (games with goals, cards and the clock). Both reconnect on their own,
// so they survive a broker restart.
import { Client } from '@stomp/stompjs';
import { WebSocket } from 'ws';

// Node 20 has no global WebSocket; stompjs uses the global one.
if (!globalThis.WebSocket) Object.assign(globalThis, { WebSocket });

/** The 200 ticker symbols: 3 or 4 capital letters, stable across runs. */
export const SYMBOLS = Array.from({ length: 200 }, (_, i) => {
  const a = String.fromCharCode(65 + (i % 26));
  const b = String.fromCharCode(65 + (Math.floor(i / 26) % 26));
  const c = String.fromCharCode(65 + ((i * 7) % 26));
  return i % 3 === 0 ? `${a}${b}${c}X` : `${a}${b}${c}`;
});

/** Connects a reconnecting stompjs client; `onConnect` runs on every (re)connect. */
function connect(brokerURL, onConnect) {
  const client = new Client({ brokerURL, reconnectDelay: 500, heartbeatIncoming: 0, heartbeatOutgoing: 0 });
  client.onConnect = () => onConnect(client);
  client.onStompError = (frame) => console.error(`publisher: broker error: ${frame.headers.message}`);
  client.activate();
  return client;
}

/**
 * Publishes ticks to /topic/ticker.<SYMBOL>: `rate` updates per second over
 * all symbols, each a JSON { symbol, price, open, time }.
 */
export function startTicker(brokerURL, { rate = 1000 } = {}) {
  const prices = SYMBOLS.map((_, i) => 20 + ((i * 37) % 480));
  const open = [...prices];
  let next = 0;
  const intervalMs = 20;
  let timer;
  let sent = 0;
  let since = 0;
  const client = connect(brokerURL, (c) => {
    // Every symbol once at once, so the retained table is full from the start.
    if (!timer) SYMBOLS.forEach((_, i) => send(c, i));
    clearInterval(timer);
    sent = 0;
    since = Date.now();
    timer = setInterval(() => {
      if (!c.connected) return;
      // As many as the elapsed time calls for, so late timers do not lower the rate.
      const due = Math.min(rate, Math.floor(((Date.now() - since) * rate) / 1000) - sent);
      sent += Math.max(0, due);
      for (let k = 0; k < due; k++) {
        // Random walk, a bit more weight on a few busy symbols.
        const i = k % 4 === 0 ? next++ % SYMBOLS.length : Math.floor(Math.random() * SYMBOLS.length);
        prices[i] = Math.max(1, prices[i] * (1 + (Math.random() - 0.5) * 0.004));
        send(c, i);
      }
    }, intervalMs);
  });
  function send(c, i) {
    c.publish({
      destination: `/topic/ticker.${SYMBOLS[i]}`,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ symbol: SYMBOLS[i], price: +prices[i].toFixed(2), open: open[i], time: Date.now() }),
    });
  }
  return { stop: async () => { clearInterval(timer); await client.deactivate(); } };
}

/** The demo games: id, home and away team. */
export const GAMES = [
  { id: 'game1', home: 'Harbour City', away: 'Northfield' },
  { id: 'game2', home: 'Riverside', away: 'Old Town Athletic' },
  { id: 'game3', home: 'Eastport', away: 'Westbridge Rovers' },
  { id: 'game4', home: 'Lakeside United', away: 'Hill Park' },
];

const PLAYERS = ['Adeyemi', 'Berg', 'Costa', 'Dubois', 'Eriksen', 'Fischer', 'García', 'Hansen', 'Ito', 'Jones'];

/**
 * Publishes game events to /topic/scores.<game>: every `everyMs`, one game
 * moves on a minute and sometimes has a goal or a card. Each message is the
 * whole state plus the event, JSON { game, home, away, homeScore, awayScore,
 * minute, event: { seq, minute, kind, team, player, text } }.
 */
export function startScores(brokerURL, { everyMs = 700 } = {}) {
  const state = GAMES.map((g) => ({ ...g, homeScore: 0, awayScore: 0, minute: 0, seq: 0 }));
  let turn = 0;
  let timer;
  const client = connect(brokerURL, (c) => {
    clearInterval(timer);
    timer = setInterval(() => {
      if (!c.connected) return;
      const g = state[turn++ % state.length];
      g.minute = g.minute >= 90 ? 1 : g.minute + 1;
      if (g.minute === 1) { g.homeScore = 0; g.awayScore = 0; }
      const roll = Math.random();
      const side = Math.random() < 0.5 ? 'home' : 'away';
      const player = PLAYERS[Math.floor(Math.random() * PLAYERS.length)];
      let kind = 'clock';
      let text = `${g.minute}'`;
      if (g.minute === 1) { kind = 'kickoff'; text = 'Kick-off'; }
      else if (roll < 0.12) {
        kind = 'goal';
        if (side === 'home') g.homeScore++; else g.awayScore++;
        text = `Goal! ${player} (${g[side]})`;
      } else if (roll < 0.2) { kind = 'card'; text = `Yellow card: ${player} (${g[side]})`; }
      g.seq++;
      c.publish({
        destination: `/topic/scores.${g.id}`,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          game: g.id, home: g.home, away: g.away, homeScore: g.homeScore, awayScore: g.awayScore, minute: g.minute,
          event: { seq: g.seq, minute: g.minute, kind, team: kind === 'goal' || kind === 'card' ? g[side] : null, player, text },
        }),
      });
    }, everyMs);
  });
  return { stop: async () => { clearInterval(timer); await client.deactivate(); } };
}
