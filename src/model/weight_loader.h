// WeightLoader: turns WeightSource tensors into backend tensors in the dtype
// the load options ask for (norms and biases always F32). Throws r1::Error;
// load_model converts that to a Status at the boundary.
#pragma once

#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/model.h"

namespace r1::model {

class WeightLoader {
 public:
  WeightLoader(const WeightSource& src, backend::Backend& be, const LoadOptions& opt)
      : src_(src), be_(be), opt_(opt) {}

  bool has(const std::string& name) const { return src_.stored_dtype(name).has_value(); }
  // A matrix-like tensor (embedding, projection, router) in the weight dtype.
  Tensor matrix(const std::string& name, const Shape& shape);
  // A vector (norm weight, bias) in F32.
  Tensor vec(const std::string& name, int64_t n);
  // A projection; `quantizable` weights become int8 under WeightDType::kInt8
  // (the MoE router passes false).
  backend::Linear linear(const std::string& prefix, int64_t out, int64_t in, bool bias = false,
                         bool quantizable = true);
  // gate_proj and up_proj stacked as one [2I, H] weight (gate rows first).
  backend::Linear gate_up(const std::string& prefix, int64_t inter, int64_t hidden);
  // Projections that share their input, stacked as one [sum of rows, in]
  // weight in the order given (and their biases, if `bias`); each part is a
  // prefix (".weight", ".bias" appended) and its number of output rows.
  backend::Linear stacked_linear(const std::vector<std::pair<std::string, int64_t>>& parts,
                                 int64_t in, bool bias = false);
  backend::ExpertWeights experts(const std::string& prefix, int64_t n, int64_t inter,
                                 int64_t hidden);
  // The host tensor as F32 (for load-time reshuffles such as MLA absorption).
  Tensor host_f32(const std::string& name, const Shape& shape);
  DType matrix_dtype(const std::string& name) const;
  DType weight_dtype_for_derived() const;

 private:
  Tensor host(const std::string& name, const Shape& shape, DType want);
  // Generated weights on a device are made there (BF16), never sent over the bus.
  bool fill_on_device(const std::string& name) const;
  // Generates `name` ([shape]) into dst's elements from `first` on.
  void fill_part(Tensor& dst, int64_t first, const std::string& name, const Shape& shape);
  bool int8() const { return opt_.weight_dtype == WeightDType::kInt8; }
  const WeightSource& src_;
  backend::Backend& be_;
  LoadOptions opt_;
};

}  // namespace r1::model
