// ModelBase: what every architecture shares (embedding, the layer loop, final
// norm, lm_head, SwiGLU MLP, per-step scratch tensors). Architectures only
// load their layers and implement layer_forward.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/weight_loader.h"

namespace r1::model {

// Named activation buffers reused across steps; grown when a step is larger.
class Scratch {
 public:
  explicit Scratch(backend::Backend& be) : be_(be) {}
  // A buffer in the backend's activation dtype.
  Tensor get(const std::string& name, const Shape& shape) {
    return get(name, shape, be_.activation_dtype());
  }
  Tensor get(const std::string& name, const Shape& shape, DType dtype);

 private:
  backend::Backend& be_;
  std::map<std::string, Tensor> buffers_;
  std::vector<Tensor> retired_;  // outgrown buffers, kept for recorded steps
};

// Bytes a product with `l` reads: weight, bias and int8 row scales.
inline int64_t linear_bytes(const backend::Linear& l) {
  int64_t b = 0;
  for (const Tensor* t : {&l.weight, &l.bias, &l.scale})
    if (t->defined()) b += static_cast<int64_t>(t->nbytes());
  return b;
}

class ModelBase : public Model {
 public:
  ModelBase(const io::ModelConfig& cfg, backend::Backend& be)
      : cfg_(cfg), backend_(be), scratch_(be) {}
  const io::ModelConfig& config() const override { return cfg_; }
  backend::Backend& backend() override { return backend_; }
  void forward(const backend::BatchInfo& batch, backend::KvCache& cache,
               std::vector<float>& logits) override;
  void forward_argmax(const backend::BatchInfo& batch, backend::KvCache& cache,
                      std::vector<int32_t>& ids) override;

 protected:
  // Issues (or replays) one step; returns the logits rows on the device
  // ([n, V] F32, n = batch.logits_indices.size(); undefined when n == 0).
  Tensor run_step(const backend::BatchInfo& batch, backend::KvCache& cache);
  // Runs one layer on the residual stream x: each of its sublayers adds its
  // output into x itself (in the epilogue of the product that makes it, where
  // the backend fuses that), and each norm is taken where its product reads it.
  virtual void layer_forward(int64_t layer, const backend::BatchInfo& batch,
                             backend::KvCache& cache, Tensor& x, Scratch& s) = 0;
  void load_common(WeightLoader& w);
  // out = down(silu(gate(x)) * up(x))
  void mlp(const backend::Linear& gate_up, const backend::Linear& down, const Tensor& x,
           Tensor& out, Scratch& s);
  int64_t common_decode_bytes() const;
  float eps() const { return static_cast<float>(cfg_.rms_norm_eps); }

  io::ModelConfig cfg_;
  backend::Backend& backend_;
  Scratch scratch_;
  Tensor embed_;       // [V, H]
  Tensor final_norm_;  // [H]
  backend::Linear lm_head_;
};

std::unique_ptr<ModelBase> make_deepseek_model(const io::ModelConfig& cfg, backend::Backend& be,
                                               WeightLoader& w);
std::unique_ptr<ModelBase> make_dense_model(const io::ModelConfig& cfg, backend::Backend& be,
                                            WeightLoader& w);

}  // namespace r1::model
