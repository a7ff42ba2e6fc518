// Sequence and RequestState: the engine-thread state of one sample (tokens,
// how many are in the KV cache, its block table, sampling RNG, text stream,
// the output not yet delivered) and of one request (its n samples, callback,
// usage). Owned by the engine; the scheduler and runner only point at them.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/block_allocator.h"
#include "engine/engine.h"
#include "engine/text_stream.h"

namespace r1::engine {

struct RequestState;

enum class SeqStatus { kWaiting, kRunning, kFinished };

class Sequence {
 public:
  // `id` also orders arrival: ids are handed out increasing.
  Sequence(int64_t id, RequestState* request, int32_t index, std::vector<int32_t> prompt)
      : id(id),
        arrival(id),
        request(request),
        index(index),
        tokens(std::move(prompt)),
        num_prompt_tokens(static_cast<int32_t>(tokens.size())) {}

  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t num_output_tokens() const { return num_tokens() - num_prompt_tokens; }
  // Tokens not yet in the KV cache (the prompt tail, or the last sample).
  int32_t num_uncomputed() const { return num_tokens() - num_computed; }
  // The chained hash of full block `i` (computed on first use).
  const BlockHash& block_hash(size_t i, int32_t block_size, const std::string& salt);
  // Drops every block reference, newest block first (so the LRU list evicts
  // a sequence's tail before its more widely shared head).
  void release_blocks();

  const int64_t id;
  const int64_t arrival;  // admission order; larger = younger
  RequestState* const request;
  const int32_t index;  // which of the request's n samples

  std::vector<int32_t> tokens;  // prompt, then output
  const int32_t num_prompt_tokens;
  int32_t num_computed = 0;       // tokens whose KV is in the cache
  std::vector<BlockRef> blocks;   // block table
  int32_t num_hashed_blocks = 0;  // leading blocks already offered to the prefix cache
  std::vector<BlockHash> hashes;  // full-block hash chain (lazy)
  SeqStatus status = SeqStatus::kWaiting;

  std::mt19937_64 rng;
  std::unique_ptr<TextStream> text;
  FinishReason finish = FinishReason::kNone;
  std::string stop_reason;

  // Output produced since the last event.
  std::vector<int32_t> new_tokens;
  std::string new_text;
  std::vector<TokenLogprob> new_logprobs;
  bool finish_pending = false;  // the finish event is not yet delivered
};

struct RequestState {
  GenerationRequest req;
  EventCallback on_event;
  std::vector<std::unique_ptr<Sequence>> samples;  // [0] first; the rest after fork
  bool forked = false;
  int32_t num_finished = 0;
  int64_t completion_tokens = 0;
  int64_t cached_prompt_tokens = 0;
  bool admitted_once = false;
  bool touched = false;  // has output to deliver this step
  bool done = false;
  Status error;
  std::chrono::steady_clock::time_point submitted;

  int32_t n() const { return req.params.n; }
};

}  // namespace r1::engine
