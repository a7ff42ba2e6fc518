// End-to-end: many concurrent streaming clients, a share of them hanging up
// mid-stream: all others finish with [DONE], and afterwards no request is
// running and no KV block is held (checked through /metrics). Then a drain:
// SIGTERM with streams in flight -> /ready 503 at once, new requests 503,
// every stream ends with [DONE], exit code 0.
import http from 'node:http';
import { startServer, check, assert, metrics } from './lib.mjs';

const CLIENTS = Number(process.env.R1_LOAD_CLIENTS || 200);
const srv = await startServer(['--max-concurrent-requests', '4096', '--max-num-seqs', '256', '--drain-timeout', '30']);
const agent = new http.Agent({ keepAlive: true, maxSockets: 100000 });
let failed = false;
const t = (name, fn) => check(name, fn).catch((e) => { failed = true; console.error(e); });

// One streaming request; abortAfter: hang up after that many chunks.
function stream(body, abortAfter = -1) {
  return new Promise((resolve) => {
    const data = JSON.stringify(body);
    const req = http.request(srv.url + '/v1/completions', { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } }, (res) => {
      let buf = '', chunks = 0, done = false, tokens = 0, finish = null;
      res.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, i); buf = buf.slice(i + 2);
          if (ev === 'data: [DONE]') done = true;
          else if (ev.startsWith('data: ')) { chunks++; const j = JSON.parse(ev.slice(6)); if (j.choices?.[0]?.text) tokens++; if (j.choices?.[0]?.finish_reason) finish = j.choices[0].finish_reason; }
          if (abortAfter >= 0 && chunks >= abortAfter && !done) { req.destroy(); resolve({ status: res.statusCode, aborted: true, done, chunks, tokens }); return; }
        }
      });
      res.on('end', () => resolve({ status: res.statusCode, done, chunks, tokens, finish, aborted: false }));
      res.on('error', () => resolve({ status: res.statusCode, done, chunks, tokens, aborted: abortAfter >= 0 }));
    });
    req.on('error', (e) => resolve({ status: 0, error: String(e), aborted: abortAfter >= 0 }));
    req.end(data);
  });
}

await t(`${CLIENTS} concurrent streams, 30% hang up mid-stream, no KV block leaked`, async () => {
  const t0 = Date.now();
  const jobs = [];
  let aborting = 0;
  for (let i = 0; i < CLIENTS; i++) {
    const abort = i % 10 < 3;
    if (abort) aborting++;
    jobs.push(stream({ prompt: `client ${i} says`, max_tokens: 16, ignore_eos: true, stream: true }, abort ? 1 + (i % 7) : -1));
  }
  const res = await Promise.all(jobs);
  const dt = (Date.now() - t0) / 1000;
  const ok = res.filter((r) => !r.aborted);
  for (const r of ok) {
    assert.equal(r.status, 200, JSON.stringify(r));
    assert.ok(r.done, 'stream ended without [DONE]');
  }
  const toks = ok.reduce((a, r) => a + r.tokens, 0);
  console.log(`     ${ok.length} completed, ${res.length - ok.length} hung up; ${toks} streamed tokens in ${dt.toFixed(1)} s`);
  // Within a few engine steps every cancelled request has let go of its blocks.
  let m;
  for (let i = 0; i < 100; i++) {
    m = await metrics(srv.url);
    if (m.get('r1serve_num_requests_running') === 0 && m.get('r1serve_engine_sequences_running') === 0 &&
        m.get('r1serve_kv_cache_blocks_free') === m.get('r1serve_kv_cache_blocks_total')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(m.get('r1serve_num_requests_running'), 0);
  assert.equal(m.get('r1serve_num_requests_waiting'), 0);
  assert.equal(m.get('r1serve_engine_sequences_running'), 0);
  assert.equal(m.get('r1serve_kv_cache_blocks_free'), m.get('r1serve_kv_cache_blocks_total'), 'KV blocks leaked');
  const cancelled = m.get('r1serve_request_cancelled_total');
  assert.ok(cancelled >= 1 && cancelled <= aborting, `cancelled ${cancelled} of ${aborting}`);
  assert.equal(m.get('r1serve_request_success_total{finished_reason="length"}'), ok.length);
});

await t('SIGTERM drain: in-flight streams finish with [DONE], ready 503, new requests 503, exit 0', async () => {
  const flights = [];
  for (let i = 0; i < 16; i++) flights.push(stream({ prompt: `drain ${i}`, max_tokens: 100, ignore_eos: true, stream: true }));
  await new Promise((r) => setTimeout(r, 300));
  srv.child.kill('SIGTERM');
  const t0 = Date.now();
  let ready;
  for (;;) {
    ready = await fetch(srv.url + '/ready').then((r) => r.status, () => 0);
    if (ready === 503 || Date.now() - t0 > 2000) break;
  }
  assert.equal(ready, 503);
  const late = await fetch(srv.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ prompt: 'late', max_tokens: 2 }) }).then((r) => r.status, () => 0);
  assert.equal(late, 503);
  const res = await Promise.all(flights);
  for (const r of res) {
    assert.equal(r.status, 200);
    assert.ok(r.done, 'a stream did not end with [DONE]');
    assert.equal(r.finish, 'length');
  }
  const { code } = await srv.exited;
  assert.equal(code, 0);
});

agent.destroy();
if (failed) process.exit(1);
console.log('all passed');
