// Live scores page: one subscription per game (/topic/scores.<game>), made
// again on every reconnect from the last x-offset/x-epoch seen, so a network
// drop or a broker restart loses no event: the SUBSCRIBE's RECEIPT says
// x-recovered:true and the missed events arrive before it. A second
// subscription per game, to /meta/subscribers/topic/scores.<game>, gives the
// "watching" count.
(function () {
  'use strict';
  const { el, connect, count } = window.Demo;
  const GAMES = ['game1', 'game2', 'game3', 'game4'];
  const KEEP = 8;
  const games = new Map(); // id → { card, parts, position: { offset, epoch }, events: [] }
  let received = 0;
  let lost = 0;
  let connects = 0;
  let resumes = 0;

  for (const id of GAMES) {
    const parts = {
      minute: el('span', { className: 'minute', text: '–' }),
      watching: el('span', { className: 'pill watching', text: '– watching' }),
      home: el('div', { className: 'team home', text: '…' }),
      score: el('div', { className: 'score', text: '0 – 0' }),
      away: el('div', { className: 'team away', text: '…' }),
      events: el('ol', { className: 'events' }, el('li', { className: 'empty', text: 'No goals or cards yet' })),
    };
    const card = el('section', { className: 'card game', dataset: { game: id } },
      el('header', null, parts.minute, parts.watching),
      el('div', { className: 'scoreline' }, parts.home, parts.score, parts.away),
      parts.events);
    document.getElementById('games').append(card);
    games.set(id, { card, parts, position: null, events: [] });
  }

  function onEvent(id, message) {
    const game = games.get(id);
    const offset = Number(message.headers['x-offset']);
    const epoch = message.headers['x-epoch'];
    // Within one epoch, offsets go up by one per event: a jump is a lost event.
    if (game.position && game.position.epoch === epoch && offset > game.position.offset + 1) {
      lost += offset - game.position.offset - 1;
      document.getElementById('lost-count').textContent = count(lost);
    }
    if (game.position && game.position.epoch === epoch && offset <= game.position.offset) return; // already shown
    game.position = { offset, epoch };
    let data;
    try { data = JSON.parse(message.body); } catch { return; }
    received++;
    document.getElementById('event-count').textContent = count(received);
    const { parts } = game;
    parts.home.textContent = data.home;
    parts.away.textContent = data.away;
    parts.score.textContent = `${data.homeScore} – ${data.awayScore}`;
    parts.minute.textContent = `${data.minute}'`;
    if (data.event && data.event.kind !== 'clock') {
      game.events.unshift(data.event);
      game.events.length = Math.min(game.events.length, KEEP);
      parts.events.replaceChildren(...game.events.map((e) =>
        el('li', { className: `ev-${e.kind}` }, el('span', { className: 'at', text: `${e.minute}'` }), el('span', { text: e.text }))));
    }
  }

  function showResume(results) {
    const notice = document.getElementById('resume-notice');
    const recovered = results.every((r) => r.recovered);
    const caughtUp = results.reduce((sum, r) => sum + r.caughtUp, 0);
    notice.hidden = false;
    notice.dataset.recovered = String(recovered);
    notice.dataset.caughtUp = String(caughtUp);
    notice.dataset.resumes = String(++resumes);
    notice.className = `notice ${recovered ? 'ok' : 'warn'}`;
    notice.textContent = recovered
      ? `Reconnected and resumed (x-recovered): ${caughtUp} missed event${caughtUp === 1 ? '' : 's'} caught up, none lost.`
      : 'Reconnected, but the broker no longer had every missed event: showing the latest state.';
  }

  connect({
    onConnect(client) {
      connects++;
      const resuming = connects > 1;
      const results = [];
      for (const id of GAMES) {
        const destination = `/topic/scores.${id}`;
        const game = games.get(id);
        const start = game.position
          ? { 'x-stream-offset': `offset=${game.position.offset + 1}`, 'x-epoch': game.position.epoch }
          : { 'x-stream-offset': 'last' };
        const receipt = `sub-${id}-${connects}`;
        let caughtUp = 0;
        client.watchForReceipt(receipt, (frame) => {
          if (!resuming) return;
          // A game that had sent nothing yet subscribed at "last": nothing to recover.
          const recovered = 'x-epoch' in start ? frame.headers['x-recovered'] === 'true' : true;
          results.push({ recovered, caughtUp });
          if (results.length === GAMES.length) showResume(results);
        });
        client.subscribe(destination, (message) => {
          if (message.headers['x-recovered'] === 'false') game.events = [];
          caughtUp++;
          onEvent(id, message);
        }, { ...start, receipt });
        client.subscribe(`/meta/subscribers${destination}`, (message) => {
          const n = Number(message.headers['x-subscribers'] ?? 0);
          game.parts.watching.textContent = `${count(n)} watching`;
        });
      }
    },
  });
})();
