// Dtype policy and stacking for model weights.
#include "model/weight_loader.h"

#include <fmt/format.h>

namespace r1::model {

DType WeightLoader::matrix_dtype(const std::string& name) const {
  switch (opt_.weight_dtype) {
    case WeightDType::kF32:
      return DType::kF32;
    case WeightDType::kBF16:
      return DType::kBF16;
    case WeightDType::kAuto:
      break;
  }
  auto stored = src_.stored_dtype(name);
  if (stored && (*stored == DType::kF32 || *stored == DType::kBF16)) return *stored;
  return DType::kF32;
}

DType WeightLoader::weight_dtype_for_derived() const {
  return opt_.weight_dtype == WeightDType::kBF16 ? DType::kBF16 : DType::kF32;
}

Tensor WeightLoader::host(const std::string& name, const Shape& shape, DType want) {
  Result<Tensor> r = src_.load(name, shape, want);
  if (!r.is_ok()) throw Error(r.status());
  return std::move(r).value();
}

Tensor WeightLoader::matrix(const std::string& name, const Shape& shape) {
  const DType dt = matrix_dtype(name);
  return be_.upload(host(name, shape, dt), dt);
}

Tensor WeightLoader::vec(const std::string& name, int64_t n) {
  return be_.upload(host(name, {n}, DType::kF32), DType::kF32);
}

Tensor WeightLoader::host_f32(const std::string& name, const Shape& shape) {
  return host(name, shape, DType::kF32);
}

backend::Linear WeightLoader::linear(const std::string& prefix, int64_t out, int64_t in,
                                     bool bias) {
  backend::Linear l;
  l.weight = matrix(prefix + ".weight", {out, in});
  if (bias) l.bias = vec(prefix + ".bias", out);
  return l;
}

backend::Linear WeightLoader::gate_up(const std::string& prefix, int64_t inter, int64_t hidden) {
  const DType dt = matrix_dtype(prefix + "gate_proj.weight");
  std::vector<Tensor> parts = {host(prefix + "gate_proj.weight", {inter, hidden}, dt),
                               host(prefix + "up_proj.weight", {inter, hidden}, dt)};
  backend::Linear l;
  l.weight = be_.upload_stacked(parts, dt).reshape({2 * inter, hidden});
  return l;
}

backend::ExpertWeights WeightLoader::experts(const std::string& prefix, int64_t n, int64_t inter,
                                             int64_t hidden) {
  const DType dt = matrix_dtype(prefix + "0.gate_proj.weight");
  backend::ExpertWeights w;
  {
    std::vector<Tensor> parts;
    for (int64_t e = 0; e < n; ++e) {
      const std::string p = fmt::format("{}{}.", prefix, e);
      parts.push_back(host(p + "gate_proj.weight", {inter, hidden}, dt));
      parts.push_back(host(p + "up_proj.weight", {inter, hidden}, dt));
    }
    w.gate_up = be_.upload_stacked(parts, dt).reshape({n, 2 * inter, hidden});
  }
  {
    std::vector<Tensor> parts;
    for (int64_t e = 0; e < n; ++e)
      parts.push_back(host(fmt::format("{}{}.down_proj.weight", prefix, e), {hidden, inter}, dt));
    w.down = be_.upload_stacked(parts, dt);
  }
  return w;
}

}  // namespace r1::model
