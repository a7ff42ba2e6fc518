// End-to-end: a real Prometheus server scrapes r1serve every second; after a
// known number of requests, its query API must report the same counters the
// client saw (successes by finish reason, HTTP statuses, generated tokens).
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startServer, check, assert, tmpdir } from './lib.mjs';

const prom = execFileSync('bash', ['-c', 'command -v prometheus || echo /usr/bin/prometheus']).toString().trim();
assert.ok(fs.existsSync(prom), 'prometheus is not installed (scripts/install-deps.sh installs it)');

const freePort = () => new Promise((r) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); }); });
const srv = await startServer(['--metrics-public']);
const dir = tmpdir('prom');
const pport = await freePort();
fs.writeFileSync(path.join(dir, 'prometheus.yml'),
  `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: r1serve\n    static_configs:\n      - targets: ['127.0.0.1:${srv.port}']\n`);
const p = spawn(prom, [`--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'data')}`,
  `--web.listen-address=127.0.0.1:${pport}`], { stdio: 'ignore' });
let failed = false;
const q = async (expr) => {
  const r = await fetch(`http://127.0.0.1:${pport}/api/v1/query?query=${encodeURIComponent(expr)}`).then((r) => r.json());
  return r.data?.result?.length ? Number(r.data.result[0].value[1]) : undefined;
};
await check('Prometheus sees the counters the client saw', async () => {
  let ok = 0, bad = 0, tokens = 0;
  for (let i = 0; i < 12; i++) {
    const r = await fetch(srv.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ prompt: `p${i}`, max_tokens: 3 + (i % 4) }) });
    const j = await r.json();
    ok++; tokens += j.usage.completion_tokens;
  }
  for (let i = 0; i < 5; i++) {
    const r = await fetch(srv.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ prompt: 'x', n: 99 }) });
    assert.equal(r.status, 400); bad++;
  }
  const deadline = Date.now() + 30000;
  let seen = {};
  while (Date.now() < deadline) {
    seen = {
      success: await q('sum(r1serve_request_success_total)').catch(() => undefined),
      length: await q('r1serve_request_success_total{finished_reason="length"}').catch(() => undefined),
      s400: await q('r1serve_http_requests_total{status="400"}').catch(() => undefined),
      gen: await q('r1serve_generation_tokens_total').catch(() => undefined),
      ttft: await q('r1serve_time_to_first_token_seconds_count').catch(() => undefined),
    };
    if (seen.success === ok && seen.s400 === bad && seen.gen === tokens) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(seen.success, ok, JSON.stringify(seen));
  assert.equal(seen.length, ok);
  assert.equal(seen.s400, bad);
  assert.equal(seen.gen, tokens);
  assert.equal(seen.ttft, ok);
}).catch((e) => { failed = true; console.error(e); });
p.kill('SIGTERM');
const { code } = await srv.stop();
assert.equal(code, 0);
if (failed) process.exit(1);
console.log('all passed');
