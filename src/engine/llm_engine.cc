// LlmEngine: request admission and validation, the engine loop, sampling and
// stop checks after each step, n > 1 forks, and event delivery.
#include "engine/llm_engine.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/check.h"

namespace r1::engine {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kTimeout:
      return "timeout";
    case FinishReason::kError:
      return "error";
  }
  return "";
}

Result<std::unique_ptr<Engine>> make_engine(std::shared_ptr<model::Model> model,
                                            std::shared_ptr<const tok::Tokenizer> tokenizer,
                                            const EngineConfig& config) {
  R1_ASSIGN_OR_RETURN(auto e, LlmEngine::create(std::move(model), std::move(tokenizer), config));
  return std::unique_ptr<Engine>(std::move(e));
}

Result<std::unique_ptr<LlmEngine>> LlmEngine::create(
    std::shared_ptr<model::Model> model, std::shared_ptr<const tok::Tokenizer> tokenizer,
    const EngineConfig& c) {
  if (!model) return Status(ErrorCode::kInvalidArgument, "make_engine: no model");
  if (c.block_size <= 0 || c.block_size > 4096)
    return make_error(ErrorCode::kInvalidArgument, "block_size {} out of range (1..4096)",
                      c.block_size);
  if (c.max_num_seqs <= 0 || c.max_num_batched_tokens <= 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "max_num_seqs ({}) and max_num_batched_tokens ({}) must be positive",
                      c.max_num_seqs, c.max_num_batched_tokens);
  int64_t blocks = c.num_kv_blocks;
  if (blocks <= 0) {
    const int64_t per_block = model->kv_cache_spec().bytes_per_token() * c.block_size;
    blocks = per_block > 0 ? c.kv_cache_bytes / per_block : 0;
  }
  if (blocks <= 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "KV cache budget of {} bytes holds no block of {} tokens", c.kv_cache_bytes,
                      c.block_size);
  int64_t max_len = c.max_model_len > 0 ? c.max_model_len : model->config().max_position_embeddings;
  if (max_len <= 0) max_len = blocks * c.block_size;
  max_len = std::min(max_len, blocks * c.block_size);
  try {
    return std::unique_ptr<LlmEngine>(
        new LlmEngine(std::move(model), std::move(tokenizer), c, blocks, max_len));
  } catch (const Error& e) {
    return e.status();
  } catch (const std::exception& e) {
    return make_error(ErrorCode::kResourceExhausted, "KV cache of {} blocks: {}", blocks, e.what());
  }
}

LlmEngine::LlmEngine(std::shared_ptr<model::Model> model,
                     std::shared_ptr<const tok::Tokenizer> tokenizer, const EngineConfig& config,
                     int64_t num_blocks, int64_t max_len)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      cfg_(config),
      num_blocks_(num_blocks),
      max_len_(max_len),
      alloc_(num_blocks, config.enable_prefix_caching),
      sched_(SchedulerConfig{static_cast<int32_t>(config.block_size), config.max_num_seqs,
                             config.max_num_batched_tokens, config.enable_chunked_prefill},
             alloc_),
      runner_(*model_, num_blocks, config.block_size) {
  for (int64_t id : model_->config().eos_token_ids) eos_ids_.push_back(static_cast<int32_t>(id));
  if (eos_ids_.empty() && tokenizer_ && tokenizer_->eos_id() >= 0)
    eos_ids_.push_back(tokenizer_->eos_id());
  stats_.kv_blocks_total = num_blocks_;
  stats_.block_size = cfg_.block_size;
  stats_.max_model_len = max_len_;
  stats_.last_step = std::chrono::steady_clock::now();
  thread_ = std::thread([this] { loop(); });
}

LlmEngine::~LlmEngine() {
  shutdown();
}

Status LlmEngine::validate(const GenerationRequest& r) const {
  const SamplingParams& p = r.params;
  const int64_t V = model_->config().vocab_size;
  if (r.request_id.empty()) return Status(ErrorCode::kInvalidArgument, "request_id is empty");
  if (r.prompt.empty()) return Status(ErrorCode::kInvalidArgument, "the prompt has no tokens");
  for (size_t i = 0; i < r.prompt.size(); ++i)
    if (r.prompt[i] < 0 || r.prompt[i] >= V)
      return make_error(ErrorCode::kInvalidArgument,
                        "prompt token {} at index {} is outside the vocabulary [0, {})",
                        r.prompt[i], i, V);
  const int64_t len = static_cast<int64_t>(r.prompt.size());
  if (len >= max_len_) {
    if (sched_.blocks_for(len) > num_blocks_)
      return make_error(
          ErrorCode::kInvalidArgument,
          "the prompt of {} tokens can never fit in the KV cache ({} blocks of {} tokens)", len,
          num_blocks_, cfg_.block_size);
    return make_error(
        ErrorCode::kInvalidArgument,
        "the prompt of {} tokens leaves no room for output within the maximum length of {} tokens",
        len, max_len_);
  }
  auto bad = [](const char* field, auto v, const char* expected) {
    return make_error(ErrorCode::kInvalidArgument, "{} = {}: expected {}", field, v, expected);
  };
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature))
    return bad("temperature", p.temperature, ">= 0");
  if (!(p.top_p > 0 && p.top_p <= 1)) return bad("top_p", p.top_p, "in (0, 1]");
  if (!(p.min_p >= 0 && p.min_p <= 1)) return bad("min_p", p.min_p, "in [0, 1]");
  if (p.top_k < -1) return bad("top_k", p.top_k, "-1, 0 (off) or positive");
  if (!(p.repetition_penalty > 0) || !std::isfinite(p.repetition_penalty))
    return bad("repetition_penalty", p.repetition_penalty, "> 0");
  if (!std::isfinite(p.presence_penalty))
    return bad("presence_penalty", p.presence_penalty, "finite");
  if (!std::isfinite(p.frequency_penalty))
    return bad("frequency_penalty", p.frequency_penalty, "finite");
  if (p.max_tokens < 1) return bad("max_tokens", p.max_tokens, ">= 1");
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens)
    return bad("min_tokens", p.min_tokens, "in [0, max_tokens]");
  if (p.n < 1) return bad("n", p.n, ">= 1");
  if (p.logprobs < -1) return bad("logprobs", p.logprobs, ">= -1");
  for (const auto& [id, b] : p.logit_bias)
    if (id < 0 || id >= V || !std::isfinite(b))
      return make_error(ErrorCode::kInvalidArgument,
                        "logit_bias entry {}: {}: expected a token id in [0, {}) and a finite bias",
                        id, b, V);
  if (!p.stop.empty() && !tokenizer_)
    return Status(ErrorCode::kInvalidArgument,
                  "stop strings need a tokenizer; this engine has none");
  return Status::ok();
}

Status LlmEngine::submit(GenerationRequest request, EventCallback on_event) {
  R1_RETURN_IF_ERROR(validate(request));
  auto rq = std::make_unique<RequestState>();
  rq->on_event = std::move(on_event);
  rq->submitted = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_ || !stats_.alive) return Status(ErrorCode::kUnavailable, "the engine is shut down");
  if (live_ids_.count(request.request_id))
    return make_error(ErrorCode::kInvalidArgument, "request id '{}' is already in flight",
                      request.request_id);
  if (static_cast<int64_t>(inbox_.size()) + stats_.waiting >= cfg_.max_waiting)
    return make_error(ErrorCode::kResourceExhausted, "the queue is full ({} requests waiting)",
                      cfg_.max_waiting);
  live_ids_.insert(request.request_id);
  rq->req = std::move(request);
  inbox_.push_back(std::move(rq));
  cv_.notify_one();
  return Status::ok();
}

void LlmEngine::cancel(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!live_ids_.count(request_id)) return;
  cancels_.push_back(request_id);
  cv_.notify_one();
}

EngineStats LlmEngine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s = stats_;
  s.waiting += static_cast<int64_t>(inbox_.size());
  return s;
}

void LlmEngine::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_one();
  }
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void LlmEngine::loop() {
  try {
    for (;;) {
      std::deque<std::unique_ptr<RequestState>> inbox;
      std::vector<std::string> cancels;
      bool stopping;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] {
          return stopping_ || !inbox_.empty() || !cancels_.empty() || !sched_.running().empty() ||
                 !sched_.waiting().empty();
        });
        inbox.swap(inbox_);
        cancels.swap(cancels_);
        stopping = stopping_;
      }
      const auto iter_start = std::chrono::steady_clock::now();
      for (auto& rq : inbox) admit(std::move(rq));
      for (const auto& id : cancels) apply_cancel(id);
      if (stopping) {
        fail_all(FinishReason::kError, Status(ErrorCode::kUnavailable, "the engine shut down"));
        publish_stats();
        deliver();
        return;
      }
      expire_deadlines();
      const int64_t steps_before = steps_, phases_before = ns_schedule_ + ns_model_ + ns_post_;
      step();
      publish_stats();
      deliver();
      if (steps_ != steps_before) {  // the rest of an iteration that ran a step
        const int64_t iter = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::steady_clock::now() - iter_start)
                                 .count();
        ns_other_ += iter - (ns_schedule_ + ns_model_ + ns_post_ - phases_before);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "r1serve engine: fatal error, engine stopped: %s\n", e.what());
    fail_all(FinishReason::kError,
             make_error(ErrorCode::kInternal, "engine failure: {}", e.what()));
    publish_stats();
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.alive = false;
    }
    deliver();
  }
}

void LlmEngine::admit(std::unique_ptr<RequestState> rq) {
  RequestState* r = rq.get();
  const std::string id = r->req.request_id;
  auto seq = std::make_unique<Sequence>(next_seq_id_++, r, 0, r->req.prompt);
  seed_rng(seq->rng, r->req.params.seed, 0);
  seq->text = std::make_unique<TextStream>(tokenizer_, r->req.params.skip_special_tokens,
                                           r->req.params.stop);
  sched_.add_waiting(seq.get());
  r->samples.push_back(std::move(seq));
  prompt_tokens_ += static_cast<int64_t>(r->req.prompt.size());
  requests_.emplace(id, std::move(rq));
}

void LlmEngine::apply_cancel(const std::string& id) {
  auto it = requests_.find(id);
  if (it == requests_.end() || it->second->done) return;
  finish_request(*it->second, FinishReason::kCancelled, Status::ok());
}

void LlmEngine::expire_deadlines() {
  const auto now = std::chrono::steady_clock::now();
  for (auto& [id, rq] : requests_)
    if (!rq->done && rq->req.deadline && *rq->req.deadline <= now)
      finish_request(*rq, FinishReason::kTimeout, Status::ok());
}

void LlmEngine::step() {
  using Clock = std::chrono::steady_clock;
  const auto since = [](Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t).count();
  };
  auto t = Clock::now();
  StepPlan plan = sched_.schedule();  // 1. schedule
  if (plan.empty()) return;
  const bool greedy = greedy_step(plan);
  ns_schedule_ += since(t);
  t = Clock::now();
  try {
    if (greedy)
      runner_.run_greedy(plan, greedy_ids_);  // 2. run the model
    else
      runner_.run(plan, logits_);
    ns_model_ += since(t);
  } catch (const std::exception& e) {
    // Every request in flight fails; cached prefixes may be half-written.
    ++step_errors_;
    fail_all(FinishReason::kError,
             make_error(ErrorCode::kInternal, "forward pass failed: {}", e.what()));
    alloc_.clear_cache();
    return;
  }
  t = Clock::now();
  ++steps_;
  sched_.on_step_done(plan);
  postprocess(plan, logits_, greedy ? &greedy_ids_ : nullptr);  // 3. sample, check stops, emit
  ns_post_ += since(t);
}

bool LlmEngine::greedy_step(const StepPlan& plan) const {
  for (const ScheduledSeq& s : plan.seqs) {
    if (!s.sample) continue;
    const Sequence& seq = *s.seq;
    const SamplingParams& p = seq.request->req.params;
    const bool stops = !p.stop_token_ids.empty() || (!p.ignore_eos && !eos_ids_.empty());
    const int32_t num_output = static_cast<int32_t>(seq.tokens.size()) - seq.num_prompt_tokens;
    if (!Sampler::plain_greedy(p, num_output, stops)) return false;
  }
  return true;
}

void LlmEngine::postprocess(const StepPlan& plan, const std::vector<float>& logits,
                            const std::vector<int32_t>* greedy) {
  const size_t V = static_cast<size_t>(runner_.vocab_size());
  size_t row = 0;
  for (const ScheduledSeq& s : plan.seqs) {
    if (!s.sample) continue;
    const size_t i = row++;
    const float* r = greedy ? nullptr : logits.data() + V * i;
    const int32_t id = greedy ? (*greedy)[i] : -1;
    Sequence& seq = *s.seq;
    RequestState& rq = *seq.request;
    if (rq.n() > 1 && !rq.forked && seq.index == 0) fork(seq, r, id);
    sample_into(seq, r, id);
  }
}

std::vector<int32_t> LlmEngine::stop_ids_for(const SamplingParams& p) const {
  std::vector<int32_t> ids = p.stop_token_ids;
  if (!p.ignore_eos) ids.insert(ids.end(), eos_ids_.begin(), eos_ids_.end());
  return ids;
}

void LlmEngine::sample_into(Sequence& seq, const float* row, int32_t greedy_id) {
  if (row == nullptr) {
    append_token(seq, greedy_id, std::nullopt);
    return;
  }
  const SamplingParams& p = seq.request->req.params;
  SampleResult res = sampler_.sample(row, runner_.vocab_size(), p, seq.tokens,
                                     seq.num_prompt_tokens, stop_ids_for(p), seq.rng);
  append_token(seq, res.token, std::move(res.logprob));
}

void LlmEngine::fork(Sequence& parent, const float* row, int32_t greedy_id) {
  RequestState& rq = *parent.request;
  rq.forked = true;
  // Children share the parent's full prompt blocks; the partial last block
  // is recomputed by each child in its own block (no copy-on-write needed).
  const int32_t bs = static_cast<int32_t>(cfg_.block_size);
  const int32_t full = parent.num_prompt_tokens / bs;
  for (int32_t i = 1; i < rq.n(); ++i) {
    auto child = std::make_unique<Sequence>(next_seq_id_++, &rq, i, parent.tokens);
    seed_rng(child->rng, rq.req.params.seed, i);
    child->text = std::make_unique<TextStream>(tokenizer_, rq.req.params.skip_special_tokens,
                                               rq.req.params.stop);
    for (int32_t b = 0; b < full; ++b)
      child->blocks.push_back(parent.blocks[static_cast<size_t>(b)].share());
    child->num_computed = full * bs;
    child->num_hashed_blocks = std::min(parent.num_hashed_blocks, full);
    child->hashes.assign(parent.hashes.begin(),
                         parent.hashes.begin() + std::min<size_t>(parent.hashes.size(), full));
    Sequence& c = *child;
    rq.samples.push_back(std::move(child));
    sample_into(c, row, greedy_id);
    if (c.status != SeqStatus::kFinished) sched_.add_running(&c);
  }
}

void LlmEngine::append_token(Sequence& seq, int32_t token, std::optional<TokenLogprob> lp) {
  RequestState& rq = *seq.request;
  const SamplingParams& p = rq.req.params;
  seq.tokens.push_back(token);
  seq.new_tokens.push_back(token);
  if (lp) seq.new_logprobs.push_back(std::move(*lp));
  rq.touched = true;
  ++generation_tokens_;
  const bool min_ok = seq.num_output_tokens() >= p.min_tokens;
  if (min_ok) {
    if (std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) !=
        p.stop_token_ids.end())
      return finish_sequence(seq, FinishReason::kStop, std::to_string(token));
    if (!p.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end())
      return finish_sequence(seq, FinishReason::kStop);
  }
  seq.new_text += seq.text->push(token, min_ok);
  if (seq.text->stopped_by())
    return finish_sequence(seq, FinishReason::kStop, *seq.text->stopped_by());
  if (seq.num_output_tokens() >= p.max_tokens || seq.num_tokens() >= max_len_)
    finish_sequence(seq, FinishReason::kLength);
}

void LlmEngine::finish_sequence(Sequence& seq, FinishReason reason, std::string stop_reason) {
  if (seq.finish != FinishReason::kNone) return;
  RequestState& rq = *seq.request;
  seq.finish = reason;
  seq.stop_reason = std::move(stop_reason);
  seq.finish_pending = true;
  seq.new_text += seq.text->finish();
  sched_.remove(&seq);
  rq.completion_tokens += seq.num_output_tokens();
  rq.touched = true;
  if (++rq.num_finished == rq.n()) rq.done = true;
}

void LlmEngine::finish_request(RequestState& rq, FinishReason reason, const Status& error) {
  // Samples not forked yet still get their own final event.
  if (!rq.forked) {
    rq.forked = true;
    for (int32_t i = static_cast<int32_t>(rq.samples.size()); i < rq.n(); ++i) {
      auto s = std::make_unique<Sequence>(next_seq_id_++, &rq, i, rq.req.prompt);
      s->text = std::make_unique<TextStream>(nullptr, true, std::vector<std::string>{});
      rq.samples.push_back(std::move(s));
    }
  }
  if (reason == FinishReason::kError) rq.error = error;
  for (auto& s : rq.samples) finish_sequence(*s, reason);
}

void LlmEngine::fail_all(FinishReason reason, const Status& error) {
  for (auto& [id, rq] : requests_)
    if (!rq->done) finish_request(*rq, reason, error);
}

void LlmEngine::deliver() {
  std::vector<std::pair<RequestState*, EngineEvent>> events;
  std::vector<std::unique_ptr<RequestState>> done;
  for (auto& [id, rq] : requests_) {
    if (!rq->touched) continue;
    rq->touched = false;
    const size_t first = events.size();
    for (auto& s : rq->samples) {
      if (s->new_tokens.empty() && s->new_text.empty() && !s->finish_pending) continue;
      EngineEvent ev;
      ev.request_id = id;
      ev.index = s->index;
      ev.token_ids = std::move(s->new_tokens);
      ev.text = std::move(s->new_text);
      ev.logprobs = std::move(s->new_logprobs);
      s->new_tokens.clear();
      s->new_text.clear();
      s->new_logprobs.clear();
      if (s->finish_pending) {
        ev.finish = s->finish;
        ev.stop_reason = s->stop_reason;
        if (s->finish == FinishReason::kError) ev.error = rq->error;
        s->finish_pending = false;
      }
      events.emplace_back(rq.get(), std::move(ev));
    }
    if (rq->done) {
      R1_CHECK(events.size() > first, "request {} done without a final event", id);
      EngineEvent& last = events.back().second;
      last.request_done = true;
      last.usage = Usage{static_cast<int64_t>(rq->req.prompt.size()), rq->completion_tokens,
                         rq->cached_prompt_tokens};
    }
  }
  // Done requests leave the live set before their last event is delivered,
  // so a callback may reuse the id at once.
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = requests_.begin(); it != requests_.end();) {
      if (it->second->done) {
        live_ids_.erase(it->first);
        done.push_back(std::move(it->second));
        it = requests_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& [rq, ev] : events) {
    if (!rq->on_event) continue;
    try {
      rq->on_event(ev);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "r1serve engine: event callback of %s threw: %s\n",
                   ev.request_id.c_str(), e.what());
    }
  }
}

void LlmEngine::publish_stats() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.running = static_cast<int64_t>(sched_.running().size());
  stats_.waiting = static_cast<int64_t>(sched_.waiting().size());
  stats_.kv_blocks_used = alloc_.num_used();
  stats_.kv_blocks_cached = alloc_.num_cached_free();
  stats_.kv_blocks_shared = alloc_.num_shared();
  stats_.prefix_cache_queries = alloc_.prefix_cache().queries();
  stats_.prefix_cache_hits = alloc_.prefix_cache().hits();
  stats_.preemptions = sched_.num_preemptions();
  stats_.steps = steps_;
  stats_.step_errors = step_errors_;
  stats_.prompt_tokens = prompt_tokens_;
  stats_.generation_tokens = generation_tokens_;
  stats_.time_schedule_us = ns_schedule_ / 1000;
  stats_.time_model_us = ns_model_ / 1000;
  stats_.time_postprocess_us = ns_post_ / 1000;
  stats_.time_other_us = ns_other_ / 1000;
  stats_.last_step = std::chrono::steady_clock::now();
}

}  // namespace r1::engine
