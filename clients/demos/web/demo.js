// Shared helpers of the demo pages: building elements without innerHTML
// (user text only ever goes through textContent), and a stompjs client that
// shows its connection state and last error in the page header.
(function () {
  'use strict';

  /** Creates an element; `props` sets className, text (as textContent) and attributes. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props ?? {})) {
      if (value == null) continue;
      if (key === 'className') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  /** Sets the header's connection state (connecting, connected, reconnecting, disconnected). */
  function setState(state, label) {
    const status = document.getElementById('status');
    status.dataset.state = state;
    status.textContent = label;
  }

  function setError(text) {
    const error = document.getElementById('last-error');
    const at = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    error.textContent = text ? `Last error (${at}): ${text}` : '';
    error.title = text ?? '';
  }

  /**
   * A reconnecting stompjs client for the demo broker. `onConnect(client)`
   * runs on every (re)connect, where subscriptions must be made again.
   * Heart-beats make a silent network drop show within a few seconds.
   */
  function connect({ onConnect, onDisconnect }) {
    const client = new StompJs.Client({
      // ?broker=ws://… points a page at another broker (or a proxy in front of it).
      brokerURL: new URLSearchParams(location.search).get('broker') || window.DEMO_CONFIG.brokerURL,
      reconnectDelay: 1000,
      heartbeatIncoming: 4000,
      heartbeatOutgoing: 4000,
    });
    let everConnected = false;
    client.onConnect = () => {
      everConnected = true;
      setState('connected', 'Live');
      onConnect(client);
    };
    client.onStompError = (frame) => setError(frame.headers.message || 'broker error');
    client.onWebSocketError = () => setError('connection to the broker failed');
    client.onWebSocketClose = () => {
      setState(everConnected ? 'reconnecting' : 'connecting', everConnected ? 'Reconnecting…' : 'Connecting…');
      onDisconnect?.();
    };
    setState('connecting', 'Connecting…');
    client.activate();
    return client;
  }

  /** Formats a count with a thin space per thousand: 1 234. */
  function count(n) {
    return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, '\u2009');
  }

  window.Demo = { el, connect, setError, count };
})();
