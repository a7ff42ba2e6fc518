// WeightSource: where a model's tensors come from at load time: a checkpoint
// on disk (CheckpointWeights) or a seeded random generator
// (RandomWeights, `--load-format dummy`). Both serve tensors by their official
// Hugging Face names, listed by tensor_inventory().
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/random.h"
#include "core/status.h"
#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/model_config.h"

namespace r1::model {

enum class TensorRole {
  kEmbedding,   // token embedding / lm_head
  kMatrix,      // projection weights (FP8 in DeepSeek's release)
  kRouter,      // MoE router weight (kept BF16 in the release)
  kNorm,        // RMSNorm weight
  kBias,        // q/k/v bias (qwen2)
  kRouterBias,  // e_score_correction_bias (F32)
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  TensorRole role;
};

// Every tensor of the main model, with its official name and shape (no MTP
// layer; no lm_head when embeddings are tied).
std::vector<TensorSpec> tensor_inventory(const io::ModelConfig& cfg);

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The stored dtype of `name`, or nullopt when there is no such tensor.
  virtual std::optional<DType> stored_dtype(const std::string& name) const = 0;
  // The tensor on the host with the given shape, in dtype `want`.
  virtual Result<Tensor> load(const std::string& name, const Shape& shape, DType want) const = 0;
  // For generated weights: the stream `name` is made of (in its stored dtype),
  // so a device can generate it in place rather than receive it over the bus.
  virtual std::optional<RandomFill> random_fill(const std::string& name) const {
    return std::nullopt;
  }
};

class CheckpointWeights final : public WeightSource {
 public:
  CheckpointWeights(io::Checkpoint ckpt, const io::ModelConfig& cfg);
  std::optional<DType> stored_dtype(const std::string& name) const override;
  Result<Tensor> load(const std::string& name, const Shape& shape, DType want) const override;

 private:
  io::Checkpoint ckpt_;
  int64_t block_rows_, block_cols_;
};

// Deterministic random weights: each tensor's values depend only on the seed
// and its name. Matrices are uniform with std 1/sqrt(fan_in); norms near 1.
class RandomWeights final : public WeightSource {
 public:
  RandomWeights(const io::ModelConfig& cfg, uint64_t seed, DType dtype = DType::kBF16);
  std::optional<DType> stored_dtype(const std::string& name) const override;
  Result<Tensor> load(const std::string& name, const Shape& shape, DType want) const override;
  std::optional<RandomFill> random_fill(const std::string& name) const override;
  // The tensor as it would be stored in a checkpoint (dtype of the role).
  Tensor generate(const TensorSpec& spec) const;

 private:
  const TensorSpec* find(const std::string& name) const;
  RandomFill fill_of(const TensorSpec& spec) const;
  std::vector<TensorSpec> specs_;
  std::unordered_map<std::string, size_t> index_;  // name -> specs_ entry
  uint64_t seed_;
  DType dtype_;
};

// Writes a complete random checkpoint (config.json copied from `config_path`,
// model.safetensors with every inventory tensor) into `out_dir`.
Status write_random_checkpoint(const std::string& config_path, const std::string& out_dir,
                               uint64_t seed);

}  // namespace r1::model
