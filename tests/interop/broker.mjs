// Starts the real stomphub binary on a free loopback port for interop tests.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { WebSocket } from 'ws';
import { Client } from '@stomp/stompjs';

// Node 20 has no global WebSocket; stompjs uses the global one, as in a browser.
Object.assign(globalThis, { WebSocket });

export const binary = resolve(process.env.STOMPHUB_BIN ?? 'target/release/stomphub');

/**
 * Starts the broker. `config` is TOML text (optional); `listen` an address
 * (default 127.0.0.1:0). Resolves with { url, port, admin, stop() } once it
 * listens; `admin` is a promise of the admin listener's base URL.
 */
export function startBroker({ config, listen = '127.0.0.1:0', dataDir } = {}) {
  // Each broker its own data directory unless told to reuse one.
  const dir = mkdtempSync(join(tmpdir(), 'stomphub-'));
  const args = ['--listen', listen, '--admin-listen', '127.0.0.1:0', '--data-dir', dataDir ?? join(dir, 'data')];
  if (config) {
    const path = join(dir, 'broker.toml');
    writeFileSync(path, config);
    args.push('--config', path);
  }
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  let stderr = '';
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  // The admin listener's URL, printed after the listeners' ones.
  let adminFound;
  const admin = new Promise((r) => { adminFound = r; });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`broker did not start: ${stderr}`)), 10_000);
    let stdout = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      const adminMatch = stdout.match(/admin on (http:\/\/\S+)/);
      if (adminMatch) adminFound(adminMatch[1].replace(/\/$/, ''));
      const match = stdout.match(/listening on (wss?:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        const url = match[1];
        resolvePromise({
          url,
          port: Number(new URL(url).port),
          process: child,
          admin,
          stop: (signal = 'SIGTERM') => new Promise((done) => {
            if (child.exitCode !== null) return done(child.exitCode);
            child.once('exit', (code) => done(code));
            child.kill(signal);
          }),
        });
      }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`broker exited with ${code}: ${stderr}`)); });
  });
}

/** Resolves when `predicate()` holds, polling; rejects after `ms`. */
export async function until(predicate, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Activates a stompjs client against `url` and resolves once it is connected. */
export function connectClient(url, options = {}) {
  return new Promise((resolve, reject) => {
    const client = new Client({ brokerURL: url, reconnectDelay: 0, ...options });
    client.onConnect = () => resolve(client);
    client.onStompError = (frame) => reject(new Error(frame.headers.message));
    client.onWebSocketError = () => reject(new Error('WebSocket error'));
    client.activate();
  });
}
