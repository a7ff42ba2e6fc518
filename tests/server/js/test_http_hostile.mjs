// End-to-end: malformed and hostile HTTP over raw sockets (oversized headers,
// long request line, bad JSON, wrong Content-Length, oversized body, slow
// senders), API-key auth over every route, and requests that overrun the
// per-request timeout. Every bad input gets its 4xx and the server keeps
// serving the others.
import net from 'node:net';
import { startServer, check, assert, readSse, metrics } from './lib.mjs';

const KEY = 'sk-test-secret-key-1234567890';
const srv = await startServer(['--api-key', KEY, '--api-key', 'second-key', '--header-timeout', '2', '--body-timeout', '3',
  '--max-body-bytes', '65536', '--max-header-bytes', '8192', '--request-timeout', '1']);
let failed = false;
const t = (name, fn) => check(name, fn).catch((e) => { failed = true; console.error(e); });
const auth = { authorization: `Bearer ${KEY}` };

// Sends raw bytes (optionally half-closing), returns the status of the reply (0: closed with none).
function raw(bytes, { end = true, timeout = 8000, trickle = null } = {}) {
  return new Promise((resolve) => {
    const s = net.connect(srv.port, '127.0.0.1');
    let data = '';
    const timer = setTimeout(() => { s.destroy(); resolve({ status: -1, data }); }, timeout);
    s.on('data', (d) => { data += d; });
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      const m = data.match(/^HTTP\/1\.1 (\d+)/);
      resolve({ status: m ? Number(m[1]) : 0, data });
    });
    s.on('connect', async () => {
      if (trickle) {
        for (const ch of bytes) {
          if (s.destroyed) return;
          s.write(ch);
          await new Promise((r) => setTimeout(r, trickle));
        }
      } else {
        s.write(bytes);
      }
      if (end && !s.destroyed) s.end();
    });
  });
}

function post(body, headers = '') {
  return `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nContent-Type: application/json\r\n${headers}Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

async function stillServing() {
  const r = await fetch(srv.url + '/v1/completions', { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'ok', max_tokens: 2 }) });
  assert.equal(r.status, 200);
}

await t('malformed requests get 4xx with OpenAI-shaped bodies', async () => {
  const good = JSON.stringify({ messages: [{ role: 'user', content: 'x' }], max_tokens: 1 });
  const cases = [
    ['oversized header', `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`, 431],
    ['64 KiB request line', `GET /${'a'.repeat(65536)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414],
    ['bad JSON', post('{"messages": [}'), 400],
    ['JSON not an object', post('[1,2]'), 400],
    ['Content-Length larger than body', post(good).replace(/Content-Length: \d+/, 'Content-Length: 500'), 400],
    ['Content-Length smaller than body', post(good).replace(/Content-Length: \d+/, 'Content-Length: 10'), 400],
    ['body over the limit', post('{"a":"' + 'x'.repeat(70000) + '"}'), 413],
    ['garbage request line', 'HELLO\r\n\r\n', 400],
    ['bad version', 'GET /health HTTP/9.9\r\n\r\n', 400],
    ['two Content-Lengths', post(good, 'Content-Length: 3\r\n'), 400],
    ['bad chunk size', `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n`, 400],
  ];
  for (const [name, bytes, want] of cases) {
    const r = await raw(bytes);
    assert.equal(r.status, want, `${name}: ${r.data.slice(0, 200)}`);
    const body = r.data.slice(r.data.indexOf('\r\n\r\n') + 4);
    const j = JSON.parse(body);
    assert.ok(j.error && 'message' in j.error && 'type' in j.error && 'param' in j.error && 'code' in j.error, name);
    await stillServing();
  }
});

await t('many one-byte chunks are fine', async () => {
  const body = JSON.stringify({ prompt: 'hi', max_tokens: 1 });
  let chunked = '';
  for (const ch of body) chunked += `1\r\n${ch}\r\n`;
  const r = await raw(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunked}0\r\n\r\n`, { end: false });
  assert.equal(r.status, 200, r.data);
});

await t('pipelined requests on one connection are all answered at once', async () => {
  // The second request is already in the server's buffer while the first is answered; it
  // must be parsed from there, not wait for more bytes until the idle timer (2 s here).
  const req = (last) => `GET /health HTTP/1.1\r\nHost: x\r\n${last ? 'Connection: close\r\n' : ''}\r\n`;
  const t0 = Date.now();
  const r = await raw(req(false) + req(false) + req(true), { end: false, timeout: 1500 });
  const answers = (r.data.match(/HTTP\/1\.1 200/g) || []).length;
  assert.equal(answers, 3, r.data);
  assert.ok(Date.now() - t0 < 1500, `took ${Date.now() - t0} ms`);
});

await t('slow header sender is cut off by the header timeout', async () => {
  const t0 = Date.now();
  const r = await raw('GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n', { trickle: 300, end: false, timeout: 12000 });
  const dt = Date.now() - t0;
  assert.ok(r.status === 408 || r.status === 0, `status ${r.status}`);
  assert.ok(dt < 4000, `took ${dt} ms`);
  await stillServing();
});

await t('slow body sender times out', async () => {
  const r = await raw(post('{"messages":[]}').replace(/Content-Length: \d+/, 'Content-Length: 100'), { end: false, timeout: 10000 });
  assert.ok(r.status === 408 || r.status === 0, `status ${r.status}`);
});

await t('auth: deny by default, allowlist /health /ready, Bearer only, keys never logged', async () => {
  const routes = [['POST', '/v1/chat/completions'], ['POST', '/v1/completions'], ['GET', '/v1/models'], ['GET', '/v1/models/tiny-r1'],
    ['POST', '/tokenize'], ['POST', '/detokenize'], ['GET', '/metrics'], ['GET', '/version']];
  const bad = [{}, { authorization: 'Bearer wrong' }, { authorization: `Basic ${KEY}` }, { authorization: KEY },
    { authorization: `Bearer ${KEY}x` }, { authorization: `Bearer ${KEY.slice(0, -1)}` }, { authorization: 'Bearer ' }];
  for (const [method, path] of routes) {
    for (const h of bad) {
      const r = await fetch(srv.url + path, { method, headers: h, body: method === 'POST' ? '{}' : undefined });
      assert.equal(r.status, 401, `${method} ${path} ${JSON.stringify(h)}`);
      const j = await r.json();
      assert.equal(j.error.type, 'authentication_error');
    }
    const ok = await fetch(srv.url + path, { method, headers: { authorization: 'bearer second-key' }, body: method === 'POST' ? '{}' : undefined });
    assert.notEqual(ok.status, 401, `${method} ${path} with the second key`);
  }
  for (const p of ['/health', '/ready']) assert.equal((await fetch(srv.url + p)).status, 200);
  const log = srv.accessLog() + srv.stderr();
  assert.ok(!log.includes(KEY) && !log.includes('second-key'), 'a key in the logs');
  assert.ok(log.includes('"key_id":"key-1"'));
});

await t('per-request timeout: an overrunning stream gets an error event, finish timeout, [DONE]; KV freed', async () => {
  // 3,000 tokens take the tiny model well over the 1 s --request-timeout.
  const body = { prompt: 'go on', max_tokens: 3000, ignore_eos: true };
  const headers = { ...auth, 'content-type': 'application/json' };
  const res = await fetch(srv.url + '/v1/completions', { method: 'POST', headers, body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }) });
  assert.equal(res.status, 200);
  const ev = await readSse(res);
  assert.equal(ev.at(-1), '[DONE]');
  const js = ev.slice(0, -1).map((e) => JSON.parse(e));
  const err = js.find((j) => j.error);
  assert.ok(err, 'no error event');
  assert.equal(err.error.code, 'request_timeout');
  assert.equal(js.filter((j) => j.choices?.[0]?.finish_reason).at(-1).choices[0].finish_reason, 'timeout');
  const usage = js.find((j) => j.usage)?.usage;
  assert.ok(usage && usage.completion_tokens > 0 && usage.completion_tokens < 3000, JSON.stringify(usage));
  const full = await fetch(srv.url + '/v1/completions', { method: 'POST', headers, body: JSON.stringify(body) });
  assert.equal(full.status, 408);
  assert.equal((await full.json()).error.code, 'request_timeout');
  let m;
  for (let i = 0; i < 50; i++) {
    m = await metrics(srv.url, auth);
    if (m.get('r1serve_kv_cache_blocks_free') === m.get('r1serve_kv_cache_blocks_total')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(m.get('r1serve_kv_cache_blocks_free'), m.get('r1serve_kv_cache_blocks_total'), 'KV blocks held after timeouts');
  assert.equal(m.get('r1serve_request_success_total{finished_reason="timeout"}'), 2);
  await stillServing();
});

const { code } = await srv.stop();
assert.equal(code, 0);
if (failed) process.exit(1);
console.log('all passed');
