// End-to-end: the official `openai` npm client against the real server on a
// tiny random-weight DeepSeek-V3 model with the real tokenizer and the R1
// chat template: chat, completions, streaming, usage, n, logprobs, tools,
// models, tokenize/detokenize and error shapes.
import { startServer, check, assert, readSse, metrics, loadOpenAI } from './lib.mjs';

const OpenAI = loadOpenAI();

const srv = await startServer();
const client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'unused', maxRetries: 0 });
let failed = false;
const t = (name, fn) => check(name, fn).catch((e) => { failed = true; console.error(e); });

await t('chat non-streaming: reasoning split, usage, ids', async () => {
  const r = await client.chat.completions.create({
    model: 'tiny-r1', messages: [{ role: 'user', content: 'What is 2+2?' }], max_tokens: 12, temperature: 0,
  });
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, 'tiny-r1');
  assert.equal(r.choices.length, 1);
  const m = r.choices[0].message;
  assert.equal(m.role, 'assistant');
  // Random weights never emit </think>: the whole output is reasoning.
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(m.content, null);
  assert.ok(m.reasoning_content.length > 0);
  assert.equal(m.reasoning, m.reasoning_content);
  assert.equal(r.usage.completion_tokens, 12);
  assert.ok(r.usage.prompt_tokens > 5);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 12);
  assert.equal(typeof r.usage.prompt_tokens_details.cached_tokens, 'number');
});

await t('chat: same seed, same output; content parts; earlier reasoning stripped', async () => {
  const req = {
    model: 'tiny-r1', max_tokens: 6, temperature: 0.8, seed: 7,
    messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: [{ type: 'text', text: 'Hi' }, { type: 'text', text: 'there' }] },
      { role: 'assistant', content: '<think>secret plan</think>Hello!', reasoning_content: 'secret plan' },
      { role: 'user', content: 'again' },
    ],
  };
  const a = await client.chat.completions.create(req);
  const b = await client.chat.completions.create(req);
  assert.equal(a.choices[0].message.reasoning_content, b.choices[0].message.reasoning_content);
  const tok = await (await fetch(srv.url + '/tokenize', { method: 'POST', body: JSON.stringify({ messages: req.messages }) })).json();
  const text = (await (await fetch(srv.url + '/detokenize', { method: 'POST', body: JSON.stringify({ tokens: tok.tokens }) })).json()).prompt;
  assert.ok(!text.includes('secret plan'), text);
  assert.ok(text.includes('Hello!'));
  assert.ok(text.includes('Hi\nthere'));
  assert.equal(tok.count, a.usage.prompt_tokens);
});

await t('chat streaming: role first, reasoning deltas, finish, include_usage, [DONE]', async () => {
  const stream = await client.chat.completions.create({
    model: 'tiny-r1', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 10, stream: true,
    stream_options: { include_usage: true },
  });
  let role = null, reasoning = '', content = '', finish = null, usage = null, n = 0;
  for await (const chunk of stream) {
    n++;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.reasoning_content) { reasoning += c.delta.reasoning_content; assert.equal(c.delta.reasoning, c.delta.reasoning_content); }
      if (c.delta.content) content += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(role, 'assistant');
  assert.ok(reasoning.length > 0);
  assert.equal(content, '');
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 10);
  assert.ok(n >= 3);
});

await t('raw SSE framing ends with [DONE] and X-Request-Id is echoed', async () => {
  const res = await fetch(srv.url + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'my-req-42' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }], max_tokens: 3, stream: true }),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-request-id'), 'my-req-42');
  assert.match(res.headers.get('content-type'), /text\/event-stream/);
  const ev = await readSse(res);
  assert.equal(ev.at(-1), '[DONE]');
  for (const e of ev.slice(0, -1)) JSON.parse(e);
  assert.ok(srv.accessLog().includes('"request_id":"my-req-42"'));
});

await t('completions: string, batch of prompts, token ids, n, echo, logprobs', async () => {
  const r = await client.completions.create({ model: 'tiny-r1', prompt: 'Once upon', max_tokens: 5, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 5);
  const b = await client.completions.create({ model: 'tiny-r1', prompt: ['a', 'b c'], max_tokens: 3, n: 2 });
  assert.equal(b.choices.length, 4);
  assert.deepEqual(b.choices.map((c) => c.index).sort(), [0, 1, 2, 3]);
  assert.equal(b.usage.completion_tokens, 12);
  const ids = await client.completions.create({ model: 'tiny-r1', prompt: [0, 100, 200], max_tokens: 2 });
  assert.equal(ids.usage.prompt_tokens, 3);
  const e = await client.completions.create({ model: 'tiny-r1', prompt: 'echo me', max_tokens: 2, echo: true, logprobs: 2 });
  assert.ok(e.choices[0].text.startsWith('echo me'));
  assert.equal(e.choices[0].logprobs.tokens.length, 2);
  assert.equal(e.choices[0].logprobs.top_logprobs[0] && Object.keys(e.choices[0].logprobs.top_logprobs[0]).length >= 1, true);
});

await t('completions streaming with usage', async () => {
  const s = await client.completions.create({ model: 'tiny-r1', prompt: 'Hi', max_tokens: 6, stream: true, stream_options: { include_usage: true } });
  let text = '', usage = null, finish = null;
  for await (const c of s) {
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) { text += ch.text; if (ch.finish_reason) finish = ch.finish_reason; }
  }
  assert.equal(usage.completion_tokens, 6);
  assert.equal(finish, 'length');
  assert.ok(text.length > 0);
});

await t('chat logprobs + top_logprobs', async () => {
  const r = await client.chat.completions.create({
    model: 'tiny-r1', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, logprobs: true, top_logprobs: 3,
  });
  const lp = r.choices[0].logprobs.content;
  assert.equal(lp.length, 4);
  for (const e of lp) {
    assert.equal(typeof e.token, 'string');
    assert.ok(e.logprob <= 0);
    assert.equal(e.top_logprobs.length, 3);
    assert.ok(Array.isArray(e.bytes));
  }
});

await t('tools and tool results go through the template', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
  const messages = [
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
    { role: 'tool', tool_call_id: 'call_1', content: '{"temp": 21}' },
  ];
  const r = await client.chat.completions.create({ model: 'tiny-r1', messages, tools, tool_choice: 'auto', max_tokens: 4 });
  assert.ok(['length', 'stop', 'tool_calls'].includes(r.choices[0].finish_reason));
  const tok = await (await fetch(srv.url + '/tokenize', { method: 'POST', body: JSON.stringify({ messages }) })).json();
  const text = (await (await fetch(srv.url + '/detokenize', { method: 'POST', body: JSON.stringify({ tokens: tok.tokens }) })).json()).prompt;
  assert.ok(text.includes('<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather'), text);
  assert.ok(text.includes('<｜tool▁output▁begin｜>{"temp": 21}<｜tool▁output▁end｜>'), text);
  const s = await client.chat.completions.create({ model: 'tiny-r1', messages, tools, max_tokens: 4, stream: true });
  for await (const c of s) void c;
});

await t('models list and retrieve', async () => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), ['tiny-r1']);
  const m = await client.models.retrieve('tiny-r1');
  assert.equal(m.id, 'tiny-r1');
  await assert.rejects(client.models.retrieve('nope'), (e) => e.status === 404);
});

await t('errors: OpenAI-shaped 400/404 naming the param', async () => {
  const cases = [
    [{ n: 17 }, 'n'], [{ temperature: 3 }, 'temperature'], [{ top_p: 0 }, 'top_p'], [{ max_tokens: 0 }, 'max_tokens'],
    [{ max_tokens: 10 ** 9 }, 'max_tokens'], [{ top_logprobs: 21, logprobs: true }, 'top_logprobs'],
    [{ stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'], [{ logit_bias: { 'x': 1 } }, 'logit_bias'],
    [{ seed: 1.5 }, 'seed'], [{ messages: 'hi' }, 'messages'], [{ stream_options: { include_usage: true } }, 'stream_options'],
  ];
  for (const [over, param] of cases) {
    const body = { model: 'tiny-r1', messages: [{ role: 'user', content: 'x' }], max_tokens: 2, ...over };
    await assert.rejects(client.chat.completions.create(body), (e) => {
      assert.equal(e.status, 400, JSON.stringify(over));
      assert.equal(e.error.param, param, JSON.stringify(e.error));
      assert.equal(e.error.type, 'invalid_request_error');
      assert.ok('code' in e.error && 'message' in e.error);
      return true;
    });
  }
  await assert.rejects(client.chat.completions.create({ model: 'other', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e.status === 404 && e.error.code === 'model_not_found');
  const long = 'word '.repeat(5000);
  await assert.rejects(client.completions.create({ model: 'tiny-r1', prompt: long, max_tokens: 1 }),
    (e) => e.status === 400 && e.error.param === 'prompt');
  const nf = await fetch(srv.url + '/nope');
  assert.equal(nf.status, 404);
  assert.ok((await nf.json()).error.message);
  const ma = await fetch(srv.url + '/v1/chat/completions');
  assert.equal(ma.status, 405);
});

await t('health, ready, version, metrics', async () => {
  assert.equal((await fetch(srv.url + '/health')).status, 200);
  assert.equal((await fetch(srv.url + '/ready')).status, 200);
  assert.ok((await (await fetch(srv.url + '/version')).json()).version);
  const m = await metrics(srv.url);
  assert.ok(m.get('r1serve_request_success_total') >= 10);
  assert.equal(m.get('r1serve_num_requests_running'), 0);
  assert.ok(m.get('r1serve_http_requests_total{status="400"}') >= 11);
  assert.ok(m.text.includes('r1serve_time_to_first_token_seconds_bucket{le="+Inf"}'));
});

const { code } = await srv.stop();
assert.equal(code, 0, 'exit code after SIGTERM');
if (failed) process.exit(1);
console.log('all passed');
