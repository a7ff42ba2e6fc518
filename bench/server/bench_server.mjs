#!/usr/bin/env node
// Loopback benchmark of the HTTP layer (a program, not a test): starts
// `r1serve serve` on the tiny random-weight model of the server tests
// (tests/server/make_tiny_model.sh, --load-format dummy), opens N concurrent
// streaming /v1/chat/completions requests (default 2,000, one connection each,
// keep-alive off), checks that every one ends with a correct finish chunk, a
// usage chunk and `data: [DONE]`, and prints the aggregate streamed tokens/s,
// TTFT median/p99, failures, the peak number of streams open at once, the
// server's peak RSS and fd count, and the CPU time of the server's HTTP I/O
// threads (named r1-http) vs the rest. Then, as a ceiling, it runs `r1serve bench`
// (the engine alone, no HTTP) on the same model with the same prompt length,
// output length, batch and request count, and prints the ratio.
//
//   node bench/server/bench_server.mjs [--clients 2000] [--max-tokens 32]
//        [--max-num-seqs 2048] [--io-threads 2] [--build build/release]
//        [--no-engine-bench] [--json FILE] [--pump [--step-us 1000]]
//
// --pump runs bench_http_pump (bench/server/bench_http_pump.cc, built next to
// r1serve) instead: the same Server over an engine that makes one token per
// request every --step-us for free, so the figure is the HTTP layer's own.
//
// Traffic goes to 127.0.0.1 only; every request has a deadline (--timeout-s)
// and the server is stopped with SIGTERM at the end.
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync, execFileSync } from 'node:child_process';

const SRC = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

function parseArgs(argv) {
  const a = {
    clients: 2000, maxTokens: 32, maxNumSeqs: 2048, ioThreads: 2, build: process.env.R1_BINARY_DIR || '',
    timeoutS: 600, engineBench: true, json: '', extra: [], pump: false, stepUs: 1000,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i], v = () => argv[++i];
    if (k === '--clients') a.clients = Number(v());
    else if (k === '--max-tokens') a.maxTokens = Number(v());
    else if (k === '--max-num-seqs') a.maxNumSeqs = Number(v());
    else if (k === '--io-threads') a.ioThreads = Number(v());
    else if (k === '--build') a.build = v();
    else if (k === '--timeout-s') a.timeoutS = Number(v());
    else if (k === '--no-engine-bench') a.engineBench = false;
    else if (k === '--pump') { a.pump = true; a.engineBench = false; }
    else if (k === '--step-us') a.stepUs = Number(v());
    else if (k === '--json') a.json = v();
    else if (k === '--') { a.extra = argv.slice(i + 1); break; }
    else { console.error(`unknown argument ${k}`); process.exit(2); }
  }
  return a;
}

const args = parseArgs(process.argv.slice(2));

// Each client holds a socket here and the server one more: raise the soft fd
// limit to the hard one by re-running under a shell that does (Node has no
// setrlimit). The server raises its own limit at start.
if (!process.env.R1_BENCH_FDS_RAISED) {
  const r = spawnSync('bash', ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"', process.execPath,
    ...process.execArgv, new URL(import.meta.url).pathname, ...process.argv.slice(2)],
  { stdio: 'inherit', env: { ...process.env, R1_BENCH_FDS_RAISED: '1' } });
  process.exit(r.status ?? 1);
}

function findBinary() {
  const cands = [args.build, 'build/release', 'build/helper-server', 'build'].filter(Boolean)
    .map((d) => path.resolve(SRC, d, 'r1serve'));
  for (const c of cands) if (fs.existsSync(c)) return c;
  console.error(`r1serve not found in ${cands.join(', ')} (use --build DIR)`);
  process.exit(2);
}
const BIN = findBinary();
const softFds = Number(execFileSync('bash', ['-c', 'ulimit -n']).toString().trim());
if (softFds < args.clients + 256) {
  console.error(`fd limit ${softFds} is too low for ${args.clients} clients (raise the hard limit)`);
  process.exit(2);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'r1-bench-server-'));
const model = path.join(dir, 'tiny-r1');
execFileSync(path.join(SRC, 'tests/server/make_tiny_model.sh'), [model], { stdio: 'inherit' });
const TEMPLATE = path.join(SRC, 'tests/data/chat_templates/templates/deepseek_r1.jinja');

const limit = String(Math.max(4096, args.clients * 2));
const serveArgs = ['serve', '--model', model, '--load-format', 'dummy', '--seed', '1', '--port', '0',
  '--served-model-name', 'tiny-r1', '--chat-template', TEMPLATE, '--reasoning-parser', 'deepseek_r1',
  '--max-concurrent-requests', limit, '--max-queue-len', limit, '--max-connections', limit,
  '--max-num-seqs', String(args.maxNumSeqs), '--io-threads', String(args.ioThreads),
  '--request-timeout', String(args.timeoutS), '--log-level', 'warn', ...args.extra];
// --pump: the same Server over an engine that makes tokens for free
// (bench_http_pump, built next to r1serve): what the HTTP layer alone carries.
const PUMP = path.join(path.dirname(BIN), 'bench/server/bench_http_pump');
const child = args.pump
  ? spawn(PUMP, ['--model', model, '--port', '0', '--io-threads', String(args.ioThreads), '--step-us', String(args.stepUs)],
    { stdio: ['ignore', 'pipe', 'pipe'] })
  : spawn(BIN, serveArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
let stderr = '';
child.stderr.on('data', (d) => { stderr += d; if (stderr.length > 1 << 20) stderr = stderr.slice(-65536); });
const exited = new Promise((resolve) => child.on('exit', (code, sig) => resolve({ code, sig })));
const port = await new Promise((resolve, reject) => {
  let out = '';
  const t = setTimeout(() => reject(new Error('server did not start in 120 s: ' + stderr)), 120000);
  child.stdout.on('data', (d) => {
    out += d;
    const m = out.match(/r1serve listening on http:\/\/[^:]+:(\d+)/);
    if (m) { clearTimeout(t); resolve(Number(m[1])); }
  });
  child.on('exit', (code) => { clearTimeout(t); reject(new Error(`server exited ${code}: ${stderr}`)); });
});
const base = `http://127.0.0.1:${port}`;

// Server-side peaks from /proc: VmHWM is the kernel's own peak RSS; fds and
// open connections are sampled.
let peakFds = 0;
function sampleFds() {
  try { peakFds = Math.max(peakFds, fs.readdirSync(`/proc/${child.pid}/fd`).length); } catch { /* gone */ }
}
function procStatus(key) {
  try {
    const m = fs.readFileSync(`/proc/${child.pid}/status`, 'utf8').match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch { return 0; }
}
// CPU seconds per thread name (utime + stime): the HTTP I/O threads are
// named r1-http; everything else in the process is the engine and its
// backend threads (plus the main thread, which sleeps).
const TICK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
function threadCpu() {
  const out = { http: 0, other: 0 };
  try {
    for (const t of fs.readdirSync(`/proc/${child.pid}/task`)) {
      const st = fs.readFileSync(`/proc/${child.pid}/task/${t}/stat`, 'utf8');
      const comm = st.slice(st.indexOf('(') + 1, st.lastIndexOf(')'));
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      const sec = (Number(f[11]) + Number(f[12])) / TICK;  // utime, stime
      if (comm === 'r1-http') out.http += sec; else out.other += sec;
    }
  } catch { /* gone */ }
  return out;
}
sampleFds();
const baseFds = peakFds;
const baseRss = procStatus('VmRSS');
const sampler = setInterval(sampleFds, 100);

const messages = (i) => [{ role: 'user', content: `Client ${i} asks: what is ${i} plus ${i}?` }];
const tokenize = async (i) => (await (await fetch(base + '/tokenize', { method: 'POST', body: JSON.stringify({ messages: messages(i) }) })).json()).tokens;
const [ta, tb] = [await tokenize(1000), await tokenize(1001)];
const promptLen = ta.length;
let common = 0;
while (common < ta.length && ta[common] === tb[common]) common++;

const now = () => Number(process.hrtime.bigint()) / 1e9;
let open = 0, peakOpen = 0;

// One streaming chat request on its own connection (agent: false -> Connection: close).
function stream(i) {
  return new Promise((resolve) => {
    const body = JSON.stringify({
      model: 'tiny-r1', messages: messages(i), max_tokens: args.maxTokens, temperature: 0, ignore_eos: true,
      stream: true, stream_options: { include_usage: true },
    });
    const r = { i, status: 0, done: false, finish: null, usageTokens: -1, deltas: 0, ttft: null, err: null, t0: now() };
    const finish = (err) => {
      if (r.settled) return;
      r.settled = true;
      clearTimeout(timer);
      if (err && !r.err) r.err = err;
      r.t1 = now();
      resolve(r);
    };
    const timer = setTimeout(() => { req.destroy(); finish('client deadline'); }, args.timeoutS * 1000);
    const req = http.request(base + '/v1/chat/completions', {
      method: 'POST', agent: false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      r.status = res.statusCode;
      open++; peakOpen = Math.max(peakOpen, open);
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        buf += d;
        let k;
        while ((k = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, k);
          buf = buf.slice(k + 2);
          if (!ev.startsWith('data: ')) continue;  // keep-alive comments
          const data = ev.slice(6);
          if (data === '[DONE]') { r.done = true; continue; }
          if (r.done) { r.err = 'data after [DONE]'; continue; }
          let j;
          try { j = JSON.parse(data); } catch { r.err = 'bad JSON event'; continue; }
          if (j.error) { r.err = 'error event: ' + j.error.message; continue; }
          if (j.usage) r.usageTokens = j.usage.completion_tokens;
          const c = j.choices?.[0];
          if (!c) continue;
          const d2 = c.delta || {};
          if (d2.content || d2.reasoning_content) {
            r.deltas++;
            if (r.ttft === null) r.ttft = now() - r.t0;
          }
          if (c.finish_reason) r.finish = c.finish_reason;
        }
      });
      res.on('end', () => { open--; finish(buf.trim() ? 'trailing bytes' : null); });
      res.on('error', (e) => { open--; finish(String(e)); });
      res.on('aborted', () => finish('aborted'));
    });
    req.on('error', (e) => finish(String(e)));
    req.end(body);
  });
}

console.log(args.pump ? `server: ${PUMP} (pump engine, one token per request every ${args.stepUs} us)` : `r1serve: ${BIN}`);
console.log(`clients: ${args.clients} concurrent streaming chat requests, prompt ${promptLen} tokens (${common} common), ` +
  `max_tokens ${args.maxTokens} (ignore_eos), --max-num-seqs ${args.maxNumSeqs}, --io-threads ${args.ioThreads}`);
const cpu0 = threadCpu();
const client0 = process.cpuUsage();
const t0 = now();
const results = await Promise.all(Array.from({ length: args.clients }, (_, i) => stream(i)));
const elapsed = now() - t0;
clearInterval(sampler);
sampleFds();
const peakRss = procStatus('VmHWM');
const cpu1 = threadCpu();
const clientCpu = process.cpuUsage(client0);

const failures = [];
let tokens = 0, deltas = 0;
for (const r of results) {
  let why = r.err;
  if (!why && r.status !== 200) why = `HTTP ${r.status}`;
  if (!why && !r.done) why = 'no [DONE]';
  if (!why && r.finish !== 'length') why = `finish_reason ${r.finish}`;
  if (!why && r.usageTokens !== args.maxTokens) why = `usage.completion_tokens ${r.usageTokens}`;
  if (why) failures.push(`#${r.i}: ${why}`);
  if (r.usageTokens > 0) tokens += r.usageTokens;
  deltas += r.deltas;
}
const pct = (v, q) => {
  if (!v.length) return NaN;
  const s = [...v].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.round(q * (s.length - 1)))];
};
const ttfts = results.filter((r) => r.ttft !== null).map((r) => r.ttft);
const e2es = results.map((r) => r.t1 - r.t0);
const m = await (await fetch(base + '/metrics')).text();
const metric = (name) => {
  const line = m.split('\n').find((l) => l.startsWith(name + ' '));
  return line ? Number(line.slice(name.length + 1)) : NaN;
};
const kvLeak = metric('r1serve_kv_cache_blocks_total') - metric('r1serve_kv_cache_blocks_free');

child.kill('SIGTERM');
const ex = await exited;

const out = {
  date: new Date().toISOString(), clients: args.clients, prompt_tokens: promptLen, max_tokens: args.maxTokens,
  max_num_seqs: args.maxNumSeqs, io_threads: args.ioThreads, elapsed_s: elapsed,
  completed: results.length - failures.length, failures: failures.length, streamed_tokens: tokens,
  content_deltas: deltas, tokens_per_s: tokens / elapsed, peak_open_streams: peakOpen,
  ttft_median_s: pct(ttfts, 0.5), ttft_p99_s: pct(ttfts, 0.99), e2e_median_s: pct(e2es, 0.5),
  e2e_p99_s: pct(e2es, 0.99), server_peak_rss_bytes: peakRss, server_base_rss_bytes: baseRss,
  server_peak_fds: peakFds, server_base_fds: baseFds, kv_blocks_held_after: kvLeak, server_exit: ex.code,
  server_http_cpu_s: cpu1.http - cpu0.http, server_engine_cpu_s: cpu1.other - cpu0.other,
  client_cpu_s: (clientCpu.user + clientCpu.system) / 1e6,
};
const MiB = (b) => (b / (1 << 20)).toFixed(0);
console.log(`completed:        ${out.completed} / ${args.clients}, ${out.failures} failures, peak ${peakOpen} streams open at once`);
for (const f of failures.slice(0, 10)) console.log(`  failure ${f}`);
console.log(`elapsed:          ${elapsed.toFixed(2)} s`);
console.log(`streamed tokens:  ${tokens} (${deltas} content/reasoning deltas), ${out.tokens_per_s.toFixed(0)} tokens/s aggregate`);
console.log(`TTFT:             median ${(out.ttft_median_s * 1e3).toFixed(0)} ms, p99 ${(out.ttft_p99_s * 1e3).toFixed(0)} ms`);
console.log(`end to end:       median ${out.e2e_median_s.toFixed(2)} s, p99 ${out.e2e_p99_s.toFixed(2)} s`);
console.log(`server:           peak RSS ${MiB(peakRss)} MiB (at start ${MiB(baseRss)} MiB), peak fds ${peakFds} (at start ${baseFds}), ` +
  `KV blocks held after ${kvLeak}, exit ${ex.code}`);
const perK = (sec) => (1e6 * sec / Math.max(1, tokens)).toFixed(1);  // ms per 1000 tokens
console.log(`CPU:              server HTTP threads ${out.server_http_cpu_s.toFixed(2)} s (${perK(out.server_http_cpu_s)} ms per 1000 tokens), ` +
  `engine ${out.server_engine_cpu_s.toFixed(2)} s (${perK(out.server_engine_cpu_s)} ms per 1000), client (node) ${out.client_cpu_s.toFixed(2)} s`);

if (args.engineBench) {
  // The ceiling: the same work through the engine alone (same model, seed,
  // prompt length and shared prefix, output length, batch and number of
  // requests; no tokenizer, so no detokenization).
  const timed = fs.existsSync('/usr/bin/time');
  const b = spawnSync(timed ? '/usr/bin/time' : BIN, [...(timed ? ['-f', 'cpu %U %S', BIN] : []), 'bench', '--model', model, '--load-format', 'dummy', '--seed', '1',
    '--num-prompts', String(args.clients), '--input-len', String(promptLen), '--output-len', String(args.maxTokens),
    '--max-num-seqs', String(args.maxNumSeqs), '--shared-prefix', (common / promptLen).toFixed(3)],
  { encoding: 'utf8', timeout: args.timeoutS * 1000 });
  const tm = (b.stdout || '').match(/throughput:\s+([\d.]+) output tokens\/s/);
  const el = (b.stdout || '').match(/elapsed:\s+([\d.]+) s/);
  if (tm) {
    out.engine_tokens_per_s = Number(tm[1]);
    out.engine_elapsed_s = el ? Number(el[1]) : NaN;
    out.http_over_engine = out.tokens_per_s / out.engine_tokens_per_s;
    console.log(`engine alone:     ${out.engine_tokens_per_s.toFixed(0)} tokens/s (r1serve bench, same model/batch/lengths, ` +
      `${out.engine_elapsed_s.toFixed(2)} s)`);
    const cm = (b.stderr || '').match(/cpu ([\d.]+) ([\d.]+)/);
    if (cm) out.engine_bench_cpu_s = Number(cm[1]) + Number(cm[2]);
    console.log(`HTTP / engine:    ${(100 * out.http_over_engine).toFixed(1)}% of the engine-alone token rate (wall clock)`);
    if (cm) {
      const total = out.server_http_cpu_s + out.server_engine_cpu_s;
      console.log(`CPU per token:    server ${perK(total)} ms per 1000 tokens (HTTP threads ${(100 * out.server_http_cpu_s / total).toFixed(1)}% of it) ` +
        `vs engine alone ${perK(out.engine_bench_cpu_s)} ms per 1000`);
    }
  } else {
    console.log(`engine bench failed: ${b.status} ${b.stderr}`);
  }
}
if (args.json) fs.writeFileSync(args.json, JSON.stringify(out, null, 2) + '\n');
fs.rmSync(dir, { recursive: true, force: true });
process.exit(failures.length || ex.code !== 0 ? 1 : 0);
