// The shared parts of every model and load_model, the boundary where load
// errors (thrown as r1::Error deep in the loaders) become a Status.
#include "model/model.h"

#include <algorithm>

#include "core/check.h"
#include "io/checkpoint.h"
#include "model/model_impl.h"

namespace r1::model {

Tensor Scratch::get(const std::string& name, const Shape& shape, DType dtype) {
  Tensor& t = buffers_[name];
  const size_t need = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  if (!t.defined() || t.nbytes() < need || t.dtype() != dtype) {
    // A recorded step may still use the old buffer (Backend::begin_step): keep it.
    if (t.defined()) retired_.push_back(std::move(t));
    // Grow with headroom so steps of slowly rising size do not reallocate.
    const int64_t rows = std::max<int64_t>(shape[0] * 2, 16);
    std::vector<int64_t> dims = shape.to_vector();
    dims[0] = rows;
    t = be_.alloc(Shape(dims), dtype);
  }
  return Tensor::wrap(t.raw(), shape, dtype, t.owner(), t.device());
}

void ModelBase::load_common(WeightLoader& w) {
  embed_ = w.matrix("model.embed_tokens.weight", {cfg_.vocab_size, cfg_.hidden_size});
  final_norm_ = w.vec("model.norm.weight", cfg_.hidden_size);
  if (w.has("lm_head.weight")) {
    lm_head_ = w.linear("lm_head", cfg_.vocab_size, cfg_.hidden_size);
  } else if (cfg_.tie_word_embeddings) {
    lm_head_.weight = embed_;
  } else {
    throw Error(
        make_error(ErrorCode::kNotFound,
                   "checkpoint has no lm_head.weight and config.json does not tie embeddings"));
  }
}

int64_t ModelBase::common_decode_bytes() const {
  // One embedding row plus the whole lm_head.
  return linear_bytes(lm_head_) + static_cast<int64_t>(final_norm_.nbytes()) +
         cfg_.hidden_size * static_cast<int64_t>(dtype_size(embed_.dtype()));
}

void ModelBase::mlp(const backend::Linear& gate_up, const backend::Linear& down, const Tensor& x,
                    Tensor& out, Scratch& s) {
  const int64_t T = x.dim(0), I = down.in_features();
  Tensor gu = s.get("mlp_gate_up", {T, 2 * I});
  Tensor act = s.get("mlp_act", {T, I});
  backend_.linear_swiglu(x, gate_up, gu, act);
  backend_.linear(act, down, out);
}

Tensor ModelBase::run_step(const backend::BatchInfo& batch, backend::KvCache& cache) {
  const int64_t T = batch.num_tokens(), H = cfg_.hidden_size;
  R1_CHECK(T > 0 && static_cast<int64_t>(batch.positions.size()) == T &&
               static_cast<int64_t>(batch.slot_mapping.size()) == T,
           "malformed batch: {} tokens", T);
  const int64_t n = static_cast<int64_t>(batch.logits_indices.size());
  // The step's ops, issued unless the backend replays a recording of them; the
  // output buffer is taken first so a replay and the model agree on it.
  Tensor lg = scratch_.get("logits", {std::max<int64_t>(n, 1), cfg_.vocab_size}, DType::kF32);
  auto issue = [&] {
    Tensor x = scratch_.get("x", {T, H});  // residual stream [T, H]
    backend_.embedding(embed_, batch.token_ids, x);
    for (int64_t l = 0; l < cfg_.num_layers; ++l) layer_forward(l, batch, cache, x, scratch_);
    if (n == 0) return;
    Tensor xs = scratch_.get("x_out", {n, H});
    backend_.gather_rows(x, batch.logits_indices, xs);
    backend_.rms_norm(xs, final_norm_, eps(), xs);
    Tensor out = lg.rows(0, n);
    backend_.linear(xs, lm_head_, out);
  };
  if (!backend_.begin_step(batch, cache, lg)) issue();
  if (!backend_.end_step()) issue();
  return n > 0 ? lg.rows(0, n) : Tensor();
}

void ModelBase::forward(const backend::BatchInfo& batch, backend::KvCache& cache,
                        std::vector<float>& logits) {
  Tensor lg = run_step(batch, cache);
  logits.resize(lg.defined() ? static_cast<size_t>(lg.numel()) : 0);
  if (lg.defined()) backend_.to_host(lg, logits.data());
}

void ModelBase::forward_argmax(const backend::BatchInfo& batch, backend::KvCache& cache,
                               std::vector<int32_t>& ids) {
  Tensor lg = run_step(batch, cache);
  ids.resize(lg.defined() ? static_cast<size_t>(lg.dim(0)) : 0);
  if (!lg.defined()) return;
  Tensor d = scratch_.get("argmax", {lg.dim(0)}, DType::kI32);
  backend_.argmax_rows(lg, d);
  backend_.to_host(d, ids.data());
}

Result<std::unique_ptr<Model>> load_model(const io::ModelConfig& cfg, const WeightSource& source,
                                          backend::Backend& backend, const LoadOptions& options) {
  try {
    WeightLoader w(source, backend, options);
    std::unique_ptr<ModelBase> m =
        cfg.is_mla() ? make_deepseek_model(cfg, backend, w) : make_dense_model(cfg, backend, w);
    return std::unique_ptr<Model>(std::move(m));
  } catch (const Error& e) {
    return e.status();
  }
}

Result<std::unique_ptr<Model>> load_model_dir(const std::string& dir, backend::Backend& backend,
                                              const LoadOptions& options, bool dummy,
                                              uint64_t seed) {
  R1_ASSIGN_OR_RETURN(io::ModelConfig cfg, io::load_model_config(dir));
  if (dummy) {
    RandomWeights rw(cfg, seed);
    return load_model(cfg, rw, backend, options);
  }
  R1_ASSIGN_OR_RETURN(io::Checkpoint ckpt, io::Checkpoint::open(dir));
  CheckpointWeights cw(std::move(ckpt), cfg);
  return load_model(cfg, cw, backend, options);
}

}  // namespace r1::model
