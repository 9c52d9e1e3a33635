// Market ticker page: one wildcard subscription to /topic/ticker.*; the
// broker first sends every symbol's retained last price (x-retained:true),
// then the live stream. Rows are repainted per animation frame, or once a
// second with the "slow client" switch on.
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

  function onMessage(message) {
    let data;
    try { data = JSON.parse(message.body); } catch { return; }
    if (typeof data.symbol !== 'string' || typeof data.price !== 'number') return;
    received++;
    if (message.headers['x-retained'] === 'true') retained++;
    const entry = rowFor(data.symbol);
    entry.data = data;
    entry.ticks++;
    entry.history.push(data.price);
    if (entry.history.length > POINTS) entry.history.shift();
    dirty.add(data.symbol);
  }

  // Repaint: every frame, or once a second when "slow".
  let lastSlowPaint = 0;
  function frame(now) {
    if (!slow || now - lastSlowPaint >= 1000) { flush(); lastSlowPaint = now; }
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);
  // Also paint when the tab is hidden (no animation frames), e.g. headless.
  setInterval(() => { if (document.hidden && !slow) flush(); }, 250);

  let lastCount = 0;
  setInterval(() => {
    document.getElementById('rate').textContent = count(received - lastCount);
    lastCount = received;
  }, 1000);

  document.getElementById('slow').addEventListener('change', (event) => {
    slow = event.target.checked;
    document.getElementById('slow-notice').hidden = !slow;
  });

  connect({
    onConnect(client) {
      // The rule retains the last price of each symbol: the snapshot is every symbol's.
      client.subscribe('/topic/ticker.*', onMessage, { 'x-stream-offset': 'last' });
    },
  });
})();
