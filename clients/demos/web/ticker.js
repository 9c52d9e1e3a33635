// Market ticker page: one wildcard subscription to /topic/ticker.*; the
// broker first sends every symbol's retained last price (x-retained:true),
// then the live stream. The "slow client" switch subscribes again with
// x-max-rate:1: the broker then sends each symbol's latest price at most
// once a second (the broker's conflate policy for /topic/ticker.* keeps a
// page that still falls behind current). Rows are repainted per animation
// frame.
(function () {
  'use strict';
  const { el, connect, count } = window.Demo;
  const POINTS = 40;
  const rows = new Map(); // symbol → { row, cells, data, history, ticks }
  const dirty = new Set();
  const body = document.getElementById('rows');
  let received = 0;
  let retained = 0;
  let slow = false;
  let client = null;
  let subscription = null;
  // Since "slow client" was switched on: when, and per symbol the live
  // (not retained) updates received, for the page's stats and the tests.
  const slowStats = { since: 0, ticks: new Map() };
  window.tickerSlowStats = () => ({
    seconds: slow ? (performance.now() - slowStats.since) / 1000 : 0,
    maxTicks: Math.max(0, ...slowStats.ticks.values()),
    symbols: slowStats.ticks.size,
  });

  function rowFor(symbol) {
    let entry = rows.get(symbol);
    if (entry) return entry;
    const cells = {
      last: el('td', { className: 'last' }), change: el('td'), percent: el('td'),
      trend: el('td', { className: 'trend' }), ticks: el('td'),
    };
    const row = el('tr', { dataset: { symbol } }, el('td', { text: symbol }), cells.last, cells.change, cells.percent, cells.trend, cells.ticks);
    entry = { row, cells, data: null, previous: null, history: [], ticks: 0 };
    rows.set(symbol, entry);
    // Keep the table in symbol order.
    const after = [...body.children].find((r) => r.dataset.symbol > symbol);
    body.insertBefore(row, after ?? null);
    document.getElementById('symbol-count').textContent = count(rows.size);
    return entry;
  }

  function sparkline(history) {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('width', '110');
    svg.setAttribute('height', '22');
    if (history.length > 1) {
      const min = Math.min(...history);
      const max = Math.max(...history);
      const span = max - min || 1;
      const points = history.map((p, i) => `${(i * 110) / (POINTS - 1)},${20 - ((p - min) / span) * 18}`).join(' ');
      const line = document.createElementNS(ns, 'polyline');
      line.setAttribute('points', points);
      line.setAttribute('fill', 'none');
      line.setAttribute('stroke', history[history.length - 1] >= history[0] ? '#2ecc8f' : '#ff5d6c');
      line.setAttribute('stroke-width', '1.5');
      svg.append(line);
    }
    return svg;
  }

  function paint(entry) {
    const { data, cells } = entry;
    const change = data.price - data.open;
    const direction = change >= 0 ? 'up' : 'down';
    cells.last.textContent = data.price.toFixed(2);
    cells.change.textContent = `${change >= 0 ? '+' : ''}${change.toFixed(2)}`;
    cells.percent.textContent = `${change >= 0 ? '+' : ''}${((change / data.open) * 100).toFixed(2)}%`;
    cells.change.className = direction;
    cells.percent.className = direction;
    cells.trend.replaceChildren(sparkline(entry.history));
    cells.ticks.textContent = count(entry.ticks);
    // The last price takes the colour of its last move.
    if (entry.previous != null && entry.previous !== data.price) {
      cells.last.className = data.price > entry.previous ? 'last tick-up' : 'last tick-down';
    }
    entry.previous = data.price;
  }

  function flush() {
    for (const symbol of dirty) paint(rows.get(symbol));
    dirty.clear();
    document.getElementById('retained-count').textContent = count(retained);
  }

  function onMessage(message, capped) {
    let data;
    try { data = JSON.parse(message.body); } catch { return; }
    if (typeof data.symbol !== 'string' || typeof data.price !== 'number') return;
    received++;
    const isRetained = message.headers['x-retained'] === 'true';
    if (isRetained) retained++;
    if (capped && !isRetained) slowStats.ticks.set(data.symbol, (slowStats.ticks.get(data.symbol) ?? 0) + 1);
    const entry = rowFor(data.symbol);
    entry.data = data;
    entry.ticks++;
    entry.history.push(data.price);
    if (entry.history.length > POINTS) entry.history.shift();
    dirty.add(data.symbol);
  }

  // Repaint every frame: with the switch on, the broker sends less.
  function frame() {
    flush();
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);
  // Also paint when the tab is hidden (no animation frames), e.g. headless.
  setInterval(() => { if (document.hidden) flush(); }, 250);

  let lastCount = 0;
  setInterval(() => {
    document.getElementById('rate').textContent = count(received - lastCount);
    lastCount = received;
  }, 1000);

  // (Re)subscribes as the switch says. The rule retains the last price of
  // each symbol: the snapshot is every symbol's, then the live stream, at
  // most one message a second per symbol when slow.
  function subscribe() {
    if (!client?.connected) return;
    subscription?.unsubscribe();
    const capped = slow;
    const headers = { 'x-stream-offset': 'last' };
    if (capped) headers['x-max-rate'] = '1';
    subscription = client.subscribe('/topic/ticker.*', (message) => onMessage(message, capped), headers);
  }

  document.getElementById('slow').addEventListener('change', (event) => {
    slow = event.target.checked;
    document.getElementById('slow-notice').hidden = !slow;
    slowStats.since = performance.now();
    slowStats.ticks.clear();
    subscribe();
  });

  client = connect({
    onConnect() {
      subscribe();
    },
    onDisconnect() {
      subscription = null;
    },
  });
})();
