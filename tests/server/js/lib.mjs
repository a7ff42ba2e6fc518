// Shared helpers of the server end-to-end tests: make the tiny model, start
// the real `r1serve serve` binary on a free port, stop it with SIGTERM.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

export const SRC = process.env.R1_SOURCE_DIR || path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..');
export const BIN = process.env.R1_SERVE_BIN || path.join(process.env.R1_BINARY_DIR || path.join(SRC, 'build'), 'r1serve');
export const R1_TEMPLATE = path.join(SRC, 'tests/data/chat_templates/templates/deepseek_r1.jinja');

export function tmpdir(name) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `r1srv-${name}-`));
}

export function makeModel(dir) {
  const m = path.join(dir, 'tiny-r1');
  execFileSync(path.join(SRC, 'tests/server/make_tiny_model.sh'), [m], { stdio: 'inherit' });
  return m;
}

// Starts the server; resolves when it printed its listening line.
export async function startServer(args = [], { dir, env = {} } = {}) {
  dir = dir || tmpdir('srv');
  const model = makeModel(dir);
  const full = ['serve', '--model', model, '--load-format', 'dummy', '--seed', '1', '--port', '0',
    '--served-model-name', 'tiny-r1', '--chat-template', R1_TEMPLATE, '--reasoning-parser', 'deepseek_r1',
    '--access-log', path.join(dir, 'access.log'), ...args];
  const child = spawn(BIN, full, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error('server did not start in 60 s: ' + stderr)), 60000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/r1serve listening on http:\/\/[^:]+:(\d+)/);
      if (m) { clearTimeout(t); resolve(Number(m[1])); }
    });
    child.on('exit', (code) => { clearTimeout(t); reject(new Error(`server exited ${code}: ${stderr}`)); });
  });
  const exited = new Promise((resolve) => child.on('exit', (code, sig) => resolve({ code, sig })));
  return {
    child, port, dir, model, exited,
    url: `http://127.0.0.1:${port}`,
    stderr: () => stderr,
    accessLog: () => fs.readFileSync(path.join(dir, 'access.log'), 'utf8'),
    async stop() {
      child.kill('SIGTERM');
      const r = await exited;
      return r;
    },
  };
}

export async function metrics(url, headers = {}) {
  const r = await fetch(url + '/metrics', { headers });
  assert.equal(r.status, 200);
  const text = await r.text();
  const get = (name) => {
    let sum = 0, found = false;
    for (const line of text.split('\n')) {
      if (line.startsWith('#')) continue;
      const sp = line.lastIndexOf(' ');
      const key = line.slice(0, sp);
      if (key === name || key.startsWith(name + '{')) { sum += Number(line.slice(sp + 1)); found = true; }
    }
    return found ? sum : undefined;
  };
  return { text, get };
}

// Reads an SSE response body: returns the list of data payloads.
export async function readSse(res) {
  const dec = new TextDecoder();
  let buf = '';
  const events = [];
  for await (const chunk of res.body) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of ev.split('\n')) if (line.startsWith('data: ')) events.push(line.slice(6));
    }
  }
  return events;
}

export function check(name, fn) {
  return fn().then(() => console.log(`ok   ${name}`), (e) => { console.log(`FAIL ${name}`); throw e; });
}

export { assert };

// The openai package from third_party/npm (ES modules ignore NODE_PATH).
export function loadOpenAI() {
  const base = process.env.NODE_PATH ? process.env.NODE_PATH.split(':')[0] : path.join(SRC, 'third_party/npm/node_modules');
  const require = createRequire(path.join(base, 'x.js'));
  return require('openai').OpenAI;
}
