// Model: a loaded network that runs one forward step over a packed batch and
// its paged KV cache. DeepSeek V2/V3 (MLA + DeepSeekMoE) and the dense
// Llama/Qwen2 distills implement it, written once against backend::Backend.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/status.h"
#include "io/model_config.h"
#include "model/weight_source.h"

namespace r1::model {

enum class WeightDType {
  kAuto,  // keep F32/BF16 as stored; widen the rest (FP8, F16) to F32 exactly
  kF32,
  kBF16,
  // Weight-only int8 for projection weights (one F32 scale per row); the
  // embedding, router and norms stay float. CPU backend only.
  kInt8,
};

struct LoadOptions {
  WeightDType weight_dtype = WeightDType::kAuto;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const io::ModelConfig& config() const = 0;
  virtual backend::Backend& backend() = 0;
  // What the KV cache of this model holds per token and layer.
  virtual backend::KvCacheSpec kv_cache_spec() const = 0;
  // Runs one step: writes the new tokens' keys/values into `cache` and returns
  // the logits of rows batch.logits_indices as [n, vocab_size] F32 on the host.
  virtual void forward(const backend::BatchInfo& batch, backend::KvCache& cache,
                       std::vector<float>& logits) = 0;
  // The same step, returning only the greedy token (argmax, first maximum) of
  // each logits row. Models on a device keep the logits there; this default
  // downloads them.
  virtual void forward_argmax(const backend::BatchInfo& batch, backend::KvCache& cache,
                              std::vector<int32_t>& ids) {
    std::vector<float> logits;
    forward(batch, cache, logits);
    const size_t V = static_cast<size_t>(config().vocab_size);
    ids.resize(V ? logits.size() / V : 0);
    for (size_t i = 0; i < ids.size(); ++i)
      ids[i] = static_cast<int32_t>(
          std::max_element(logits.begin() + static_cast<ptrdiff_t>(i * V),
                           logits.begin() + static_cast<ptrdiff_t>((i + 1) * V)) -
          (logits.begin() + static_cast<ptrdiff_t>(i * V)));
  }
  // Bytes of weights one decoded token must read at batch 1 (all dense
  // weights, the lm_head, and top_k routed experts per MoE layer).
  virtual int64_t decode_weight_bytes() const = 0;
};

Result<std::unique_ptr<Model>> load_model(const io::ModelConfig& cfg, const WeightSource& source,
                                          backend::Backend& backend, const LoadOptions& options);

// Loads DIR/config.json and the checkpoint in DIR, or random weights from
// `seed` when `dummy` is set (--load-format dummy).
Result<std::unique_ptr<Model>> load_model_dir(const std::string& dir, backend::Backend& backend,
                                              const LoadOptions& options, bool dummy = false,
                                              uint64_t seed = 0);

}  // namespace r1::model
