// The README's stompjs snippet, extracted from README.md and run as written
// with Node (only the broker URL is replaced by the test broker's): it
// prints the message it publishes, and shows the broker's ERROR when the
// login is refused.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBroker, until } from './broker.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const readme = readFileSync(join(here, '..', '..', 'README.md'), 'utf8');
const section = readme.split('## Connect with stompjs')[1] ?? '';
const snippet = (section.match(/```js\n([\s\S]*?)```/) ?? [])[1];

const brokers = [];
const files = [];
after(async () => {
  for (const broker of brokers) await broker.stop();
  for (const file of files) rmSync(file, { force: true });
});

/** Runs the snippet against `url` until `done(output)`; resolves with the output. */
async function runSnippet(url, name, done) {
  assert.ok(snippet, 'no ```js block under "## Connect with stompjs" in README.md');
  assert.ok(snippet.includes("'ws://127.0.0.1:61614/ws'"), 'the snippet names the default URL');
  // Inside the repository, so that its node_modules resolve as for a user.
  const file = join(here, `.readme-${name}-${process.pid}.mjs`);
  files.push(file);
  writeFileSync(file, snippet.replace("'ws://127.0.0.1:61614/ws'", JSON.stringify(url)));
  const child = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk) => { output += chunk; });
  child.stderr.on('data', (chunk) => { output += chunk; });
  try {
    await until(() => done(output), 10000, `the snippet's output (so far: ${JSON.stringify(output)})`);
  } finally {
    child.kill();
  }
  return output;
}

test('the README snippet runs as written and prints the message', async () => {
  const broker = await startBroker();
  brokers.push(broker);
  const output = await runSnippet(broker.url, 'ok', (o) => o.includes('101.25'));
  assert.match(output, /^101\.25$/m);
});

test('the README snippet shows a refused login', async () => {
  const broker = await startBroker({ config: '[auth]\nanonymous = "never"\n' });
  brokers.push(broker);
  const output = await runSnippet(broker.url, 'refused', (o) => o.includes('broker error:'));
  assert.match(output, /broker error: .+/);
});
