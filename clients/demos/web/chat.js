// Chat page: the room's topic keeps its last 50 messages, so a SUBSCRIBE
// with x-stream-offset:first shows them on join; a reconnect resumes from
// the last x-offset seen. Presence is the room topic's subscriber count
// (/meta/subscribers/topic/chat.<room>). Names and texts only ever go
// through textContent.
(function () {
  'use strict';
  const { el, connect, count, setError } = window.Demo;
  const params = new URLSearchParams(location.search);
  const room = (params.get('room') || 'lobby').replace(/[^A-Za-z0-9_-]/g, '').slice(0, 40) || 'lobby';
  const destination = `/topic/chat.${room}`;
  const list = document.getElementById('messages');
  const nameInput = document.getElementById('name');
  const textInput = document.getElementById('text');
  const sendButton = document.getElementById('send-button');
  let position = null; // { offset, epoch } of the last message shown
  let client;
  let historyDone = false; // the first SUBSCRIBE's RECEIPT came: what follows is live
  let connects = 0;

  document.getElementById('room-name').textContent = `#${room}`;
  nameInput.value = localStorage.getItem('demo-chat-name') || '';

  function atBottom() { return list.scrollHeight - list.scrollTop - list.clientHeight < 40; }

  function show(message) {
    const offset = Number(message.headers['x-offset']);
    const epoch = message.headers['x-epoch'];
    if (position && position.epoch === epoch && offset <= position.offset) return; // already shown
    position = { offset, epoch };
    let data;
    try { data = JSON.parse(message.body); } catch { data = { name: '?', text: message.body }; }
    // The snapshot (kept history) comes before the SUBSCRIBE's RECEIPT.
    const isHistory = !historyDone;
    const stick = atBottom();
    const time = data.time ? new Date(data.time).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '';
    list.append(el('li', { className: isHistory ? 'message history' : 'message' },
      el('span', { className: 'who', text: String(data.name ?? '?') }),
      el('span', { className: 'text', text: String(data.text ?? '') }),
      el('span', { className: 'time', text: time })));
    if (stick) list.scrollTop = list.scrollHeight;
  }

  document.getElementById('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    const name = nameInput.value.trim() || 'guest';
    const text = textInput.value.trim();
    if (!text || !client?.connected) return;
    localStorage.setItem('demo-chat-name', name);
    try {
      client.publish({ destination, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, text, time: Date.now() }) });
      textInput.value = '';
    } catch (error) {
      setError(error.message);
    }
  });

  client = connect({
    onConnect(c) {
      sendButton.disabled = false;
      const start = position
        ? { 'x-stream-offset': `offset=${position.offset + 1}`, 'x-epoch': position.epoch }
        : { 'x-stream-offset': 'first' };
      const receipt = `chat-${++connects}`;
      c.watchForReceipt(receipt, () => {
        if (historyDone) return;
        historyDone = true;
        list.dataset.history = String(list.children.length);
        if (list.children.length) list.append(el('li', { className: 'divider', text: 'New messages' }));
        list.scrollTop = list.scrollHeight;
      });
      c.subscribe(destination, show, { ...start, receipt });
      c.subscribe(`/meta/subscribers${destination}`, (message) => {
        const n = Number(message.headers['x-subscribers'] ?? 0);
        document.getElementById('presence').textContent = `${count(n)} online`;
      });
    },
    onDisconnect() { sendButton.disabled = true; },
  });
})();
