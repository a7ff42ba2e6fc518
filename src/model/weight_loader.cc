// Dtype policy and stacking for model weights.
#include "model/weight_loader.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "core/check.h"

namespace r1::model {

namespace {

// Symmetric per-row int8: scale = max|w| / 127, q = round(w / scale).
struct Quantized {
  Tensor q;      // I8, same shape
  Tensor scale;  // F32 [rows]
};

Quantized quantize_rows(const Tensor& f32) {
  const int64_t rows = f32.dim(0), cols = f32.row_size();
  Quantized r{Tensor::empty(f32.shape(), DType::kI8), Tensor::empty({rows}, DType::kF32)};
  const float* w = f32.data<float>();
  int8_t* q = r.q.data<int8_t>();
  for (int64_t i = 0; i < rows; ++i) {
    float amax = 0.0f;
    for (int64_t j = 0; j < cols; ++j) amax = std::max(amax, std::fabs(w[i * cols + j]));
    const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
    r.scale.data<float>()[i] = s;
    for (int64_t j = 0; j < cols; ++j)
      q[i * cols + j] =
          static_cast<int8_t>(std::lrint(std::clamp(w[i * cols + j] / s, -127.0f, 127.0f)));
  }
  return r;
}

}  // namespace

DType WeightLoader::matrix_dtype(const std::string& name) const {
  switch (opt_.weight_dtype) {
    case WeightDType::kF32:
      return DType::kF32;
    case WeightDType::kBF16:
      return DType::kBF16;
    case WeightDType::kAuto:
    case WeightDType::kInt8:
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

bool WeightLoader::fill_on_device(const std::string& name) const {
  if (be_.device() == Device::kCpu || int8()) return false;
  const DType dt = matrix_dtype(name);
  return src_.stored_dtype(name) == DType::kBF16 && (dt == DType::kBF16 || dt == DType::kF32) &&
         src_.random_fill(name).has_value();
}

void WeightLoader::fill_part(Tensor& dst, int64_t first, const std::string& name,
                             const Shape& shape) {
  const int64_t n = shape.numel();
  R1_CHECK(first + n <= dst.numel(), "random fill of {} past its buffer", name);
  Tensor part = Tensor::wrap(static_cast<char*>(dst.raw()) + first * 2, shape, DType::kBF16,
                             dst.owner(), dst.device());
  be_.fill_random(part, *src_.random_fill(name));
}

Tensor WeightLoader::matrix(const std::string& name, const Shape& shape) {
  if (fill_on_device(name)) {
    Tensor t = be_.alloc(shape, DType::kBF16);
    fill_part(t, 0, name, shape);
    return t;
  }
  const DType dt = matrix_dtype(name);
  return be_.upload(host(name, shape, dt), dt);
}

Tensor WeightLoader::vec(const std::string& name, int64_t n) {
  return be_.upload(host(name, {n}, DType::kF32), DType::kF32);
}

Tensor WeightLoader::host_f32(const std::string& name, const Shape& shape) {
  return host(name, shape, DType::kF32);
}

backend::Linear WeightLoader::linear(const std::string& prefix, int64_t out, int64_t in, bool bias,
                                     bool quantizable) {
  backend::Linear l;
  if (quantizable && int8()) {
    Quantized qz = quantize_rows(host(prefix + ".weight", {out, in}, DType::kF32));
    l.weight = be_.upload(qz.q, DType::kI8);
    l.scale = be_.upload(qz.scale, DType::kF32);
  } else {
    l.weight = matrix(prefix + ".weight", {out, in});
  }
  if (bias) l.bias = vec(prefix + ".bias", out);
  return l;
}

backend::Linear WeightLoader::gate_up(const std::string& prefix, int64_t inter, int64_t hidden) {
  return stacked_linear({{prefix + "gate_proj", inter}, {prefix + "up_proj", inter}}, hidden);
}

backend::Linear WeightLoader::stacked_linear(
    const std::vector<std::pair<std::string, int64_t>>& parts, int64_t in, bool bias) {
  R1_CHECK(!parts.empty(), "stacked_linear of nothing");
  int64_t rows = 0;
  for (const auto& [name, n] : parts) rows += n;
  // Row-wise concatenation of host tensors of one dtype.
  auto concat = [&](const std::vector<Tensor>& ts, const Shape& shape, DType dt) {
    Tensor out = Tensor::empty(shape, dt);
    char* dst = static_cast<char*>(out.raw());
    for (const Tensor& t : ts) {
      std::memcpy(dst, t.raw(), t.nbytes());
      dst += t.nbytes();
    }
    return out;
  };
  backend::Linear l;
  if (bias) {
    std::vector<Tensor> bs;
    for (const auto& [name, n] : parts) bs.push_back(host(name + ".bias", {n}, DType::kF32));
    l.bias = be_.upload(concat(bs, {rows}, DType::kF32), DType::kF32);
  }
  if (int8()) {
    // Row scales, so quantizing the stack equals stacking the quantized parts.
    std::vector<Tensor> ws;
    for (const auto& [name, n] : parts) ws.push_back(host(name + ".weight", {n, in}, DType::kF32));
    Quantized qz = quantize_rows(concat(ws, {rows, in}, DType::kF32));
    l.weight = be_.upload(qz.q, DType::kI8);
    l.scale = be_.upload(qz.scale, DType::kF32);
    return l;
  }
  const std::string first = parts[0].first + ".weight";
  bool on_device = true;
  for (const auto& [name, n] : parts) on_device = on_device && fill_on_device(name + ".weight");
  if (on_device) {
    l.weight = be_.alloc({rows, in}, DType::kBF16);
    int64_t row = 0;
    for (const auto& [name, n] : parts) {
      fill_part(l.weight, row * in, name + ".weight", {n, in});
      row += n;
    }
    return l;
  }
  const DType dt = matrix_dtype(first);
  std::vector<Tensor> ws;
  for (const auto& [name, n] : parts) ws.push_back(host(name + ".weight", {n, in}, dt));
  l.weight = be_.upload(concat(ws, {rows, in}, dt), dt);
  return l;
}

backend::ExpertWeights WeightLoader::experts(const std::string& prefix, int64_t n, int64_t inter,
                                             int64_t hidden) {
  backend::ExpertWeights w;
  if (int8()) {
    std::vector<Tensor> gu, gus, d, ds;
    for (int64_t e = 0; e < n; ++e) {
      const std::string p = fmt::format("{}{}.", prefix, e);
      for (const char* name : {"gate_proj.weight", "up_proj.weight"}) {
        Quantized qz = quantize_rows(host(p + name, {inter, hidden}, DType::kF32));
        gu.push_back(qz.q);
        gus.push_back(qz.scale);
      }
      Quantized qd = quantize_rows(host(p + "down_proj.weight", {hidden, inter}, DType::kF32));
      d.push_back(qd.q);
      ds.push_back(qd.scale);
    }
    w.gate_up = be_.upload_stacked(gu, DType::kI8).reshape({n, 2 * inter, hidden});
    w.gate_up_scale = be_.upload_stacked(gus, DType::kF32).reshape({n, 2 * inter});
    w.down = be_.upload_stacked(d, DType::kI8);
    w.down_scale = be_.upload_stacked(ds, DType::kF32);
    return w;
  }
  if (fill_on_device(prefix + "0.gate_proj.weight")) {
    w.gate_up = be_.alloc({n, 2 * inter, hidden}, DType::kBF16);
    w.down = be_.alloc({n, hidden, inter}, DType::kBF16);
    for (int64_t e = 0; e < n; ++e) {
      const std::string p = fmt::format("{}{}.", prefix, e);
      fill_part(w.gate_up, 2 * e * inter * hidden, p + "gate_proj.weight", {inter, hidden});
      fill_part(w.gate_up, (2 * e + 1) * inter * hidden, p + "up_proj.weight", {inter, hidden});
      fill_part(w.down, e * hidden * inter, p + "down_proj.weight", {hidden, inter});
    }
    return w;
  }
  const DType dt = matrix_dtype(prefix + "0.gate_proj.weight");
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
