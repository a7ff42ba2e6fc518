// Engine: the narrow interface between the generation engine and everything
// above it (server, CLI). A request is submitted with a callback; the engine
// thread calls it with events (new tokens, text deltas, logprobs, the finish
// reason and usage) until a final event; cancel() stops a request within one
// step. docs/engine.md states the full contract.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace r1::model {
class Model;
}
namespace r1::tok {
class Tokenizer;
}

namespace r1::engine {

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy
  int32_t top_k = 0;         // 0 or -1: off
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::vector<std::pair<int32_t, float>> logit_bias;
  std::optional<uint64_t> seed;
  int32_t max_tokens = 16;
  int32_t min_tokens = 0;
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;  // stop strings; text that may become one is held back
  int32_t n = 1;                  // parallel samples sharing the prompt's cached blocks
  int32_t logprobs = -1;          // -1: none; k >= 0: the sampled token's logprob + top k
  bool skip_special_tokens = true;
};

struct GenerationRequest {
  std::string request_id;  // unique among live requests
  std::vector<int32_t> prompt;
  SamplingParams params;
  std::string cache_salt;  // per-tenant salt of prefix-cache block hashes ("" = none)
  // Optional deadline: the request finishes with kTimeout when it passes.
  std::optional<std::chrono::steady_clock::time_point> deadline;
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kTimeout, kError };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", ...

struct TopLogprob {
  int32_t token_id;
  float logprob;
};

struct TokenLogprob {
  int32_t token_id;
  float logprob;
  std::vector<TopLogprob> top;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // summed over the n samples
  int64_t cached_prompt_tokens = 0;
};

struct EngineEvent {
  std::string request_id;
  int32_t index = 0;               // which of the n samples
  std::vector<int32_t> token_ids;  // tokens generated since the last event
  std::string text;                // text final since the last event
  std::vector<TokenLogprob> logprobs;
  FinishReason finish = FinishReason::kNone;  // set on the sample's last event
  std::string stop_reason;                    // the stop string, or the stop token id as text
  bool request_done = false;                  // true on the request's very last event
  std::optional<Usage> usage;                 // on the request's last event
  Status error;                               // with FinishReason::kError
};

// Called on the engine thread; must not block (post to your own executor).
using EventCallback = std::function<void(const EngineEvent&)>;

struct EngineConfig {
  int64_t block_size = 16;
  int64_t num_kv_blocks = 0;              // 0: from kv_cache_bytes
  int64_t kv_cache_bytes = 256 << 20;     // memory budget of the KV pool
  int32_t max_num_seqs = 64;              // running sequences per step
  int32_t max_num_batched_tokens = 2048;  // tokens per step (chunked prefill budget)
  int64_t max_model_len = 0;              // 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
  bool enable_chunked_prefill = true;
  int32_t max_waiting = 1024;  // queue length before submit() refuses
};

struct EngineStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_used = 0;        // held by live sequences
  int64_t kv_blocks_cached = 0;      // free but holding reusable prefix blocks
  int64_t prefix_cache_queries = 0;  // blocks looked up
  int64_t prefix_cache_hits = 0;     // blocks found
  int64_t preemptions = 0;
  int64_t steps = 0;
  int64_t prompt_tokens = 0;
  int64_t generation_tokens = 0;
  int64_t kv_blocks_shared = 0;  // held by more than one sequence (n > 1, prefix hits)
  int64_t block_size = 0;
  int64_t max_model_len = 0;  // longest sequence (prompt + output) the engine runs
  int64_t step_errors = 0;    // steps whose forward threw (their requests got kError)
  // Engine-thread time, microseconds since start, in the phases of the loop
  // iterations that ran a step: scheduling, the model call (building the
  // batch, the launch and the wait for the device), sampling and stop checks,
  // and the rest (admission, cancels, deadlines, stats, events).
  int64_t time_schedule_us = 0, time_model_us = 0, time_postprocess_us = 0, time_other_us = 0;
  bool alive = true;  // the engine thread is stepping
  std::chrono::steady_clock::time_point last_step;
};

class Engine {
 public:
  virtual ~Engine() = default;
  // Validates the request (a prompt that can never fit in the KV cache, or
  // past max_model_len, is refused here with kInvalidArgument; a full queue
  // with kResourceExhausted) and queues it. Events arrive through `on_event`.
  virtual Status submit(GenerationRequest request, EventCallback on_event) = 0;
  // Stops a request; its blocks are freed within one step and it gets a
  // final event with FinishReason::kCancelled. Unknown ids are ignored.
  virtual void cancel(const std::string& request_id) = 0;
  virtual EngineStats stats() const = 0;
  // Stops accepting, finishes nothing more, joins the engine thread.
  virtual void shutdown() = 0;
};

// Starts an engine thread over `model` (and `tokenizer` for text and stop
// strings; may be null when only token ids are used).
Result<std::unique_ptr<Engine>> make_engine(std::shared_ptr<model::Model> model,
                                            std::shared_ptr<const tok::Tokenizer> tokenizer,
                                            const EngineConfig& config);

}  // namespace r1::engine
