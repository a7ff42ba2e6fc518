// DeepSeekMoE on the CPU: the router (sigmoid or softmax scores, bias used for
// selection only, group-limited top-k, renormalization, scaling) and the
// routed experts (tokens grouped by expert, one gemm per projection per
// expert that has tokens, then a weighted combine in top-k order).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/check.h"

namespace r1::backend::cpu {

void CpuBackend::moe_route(const Tensor& router_logits, const Tensor& bias, const RouterParams& p,
                           Tensor& ids, Tensor& weights) {
  const int64_t T = router_logits.dim(0), E = router_logits.dim(1), K = p.top_k;
  R1_CHECK(E % p.n_group == 0 && p.topk_group <= p.n_group && K <= E, "moe_route params");
  R1_CHECK(ids.dim(0) == T && ids.dim(1) == K && weights.dim(0) == T && weights.dim(1) == K,
           "moe_route outputs {} {}", ids.describe(), weights.describe());
  const float* lg = router_logits.data<float>();
  const float* bp = bias.defined() ? bias.data<float>() : nullptr;
  int32_t* idp = ids.data<int32_t>();
  float* wp = weights.data<float>();
  const int64_t per_group = E / p.n_group;
  const float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> scores(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
    const float* l = lg + t * E;
    if (p.scoring == Scoring::kSigmoid) {
      for (int64_t e = 0; e < E; ++e) scores[e] = 1.0f / (1.0f + std::exp(-l[e]));
    } else {
      float mx = *std::max_element(l, l + E), sum = 0.0f;
      for (int64_t e = 0; e < E; ++e) sum += (scores[e] = std::exp(l[e] - mx));
      for (int64_t e = 0; e < E; ++e) scores[e] /= sum;
    }
    for (int64_t e = 0; e < E; ++e) choice[e] = scores[e] + (bp ? bp[e] : 0.0f);
    if (p.topk_group < p.n_group) {
      // Group score: sum of the top two choice scores with a bias (noaux_tc),
      // the max without one (group_limited_greedy).
      std::vector<float> gscore(static_cast<size_t>(p.n_group));
      for (int64_t g = 0; g < p.n_group; ++g) {
        const float* c = choice.data() + g * per_group;
        float a = kNegInf, b = kNegInf;
        for (int64_t i = 0; i < per_group; ++i) {
          if (c[i] > a) {
            b = a;
            a = c[i];
          } else if (c[i] > b) {
            b = c[i];
          }
        }
        gscore[g] = bp ? a + (per_group > 1 ? b : 0.0f) : a;
      }
      std::vector<int64_t> order(static_cast<size_t>(p.n_group));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t x, int64_t y) { return gscore[x] > gscore[y]; });
      std::vector<bool> keep(static_cast<size_t>(p.n_group), false);
      for (int64_t i = 0; i < p.topk_group; ++i) keep[order[i]] = true;
      for (int64_t e = 0; e < E; ++e)
        if (!keep[e / per_group]) choice[e] = kNegInf;
    }
    std::vector<int64_t> order(static_cast<size_t>(E));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int64_t x, int64_t y) {
      return choice[x] > choice[y] || (choice[x] == choice[y] && x < y);
    });
    float sum = 0.0f;
    for (int64_t j = 0; j < K; ++j) sum += scores[order[j]];
    const float norm = p.normalize ? 1.0f / (sum + 1e-20f) : 1.0f;
    for (int64_t j = 0; j < K; ++j) {
      idp[t * K + j] = static_cast<int32_t>(order[j]);
      wp[t * K + j] = scores[order[j]] * norm * p.scale;
    }
  }
}

void CpuBackend::moe_experts(const Tensor& x, const ExpertWeights& w, const Tensor& ids,
                             const Tensor& weights, Tensor& out) {
  const int64_t T = x.dim(0), H = x.dim(1), K = ids.dim(1), E = w.num_experts(), I = w.inter_size();
  R1_CHECK(w.gate_up.dim(1) == 2 * I && w.gate_up.dim(2) == H && w.down.dim(1) == H,
           "moe weights {} {}", w.gate_up.describe(), w.down.describe());
  const int32_t* idp = ids.data<int32_t>();
  const float* wp = weights.data<float>();
  // Tokens of each expert, in token order.
  std::vector<std::vector<int64_t>> rows(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < K; ++j) {
      const int32_t e = idp[t * K + j];
      R1_CHECK(e >= 0 && e < E, "expert id {} of {}", e, E);
      rows[static_cast<size_t>(e)].push_back(t * K + j);
    }
  // y[t * K + j] = Expert_{ids[t, j]}(x[t])
  std::vector<float> y(static_cast<size_t>(T * K * H));
  std::vector<float> xin, gu, act, yo;
  const float* xp = x.data<float>();
  for (int64_t e = 0; e < E; ++e) {
    const auto& r = rows[static_cast<size_t>(e)];
    if (r.empty()) continue;
    const int64_t n = static_cast<int64_t>(r.size());
    xin.resize(static_cast<size_t>(n * H));
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(xin.data() + i * H, xp + (r[i] / K) * H, static_cast<size_t>(H) * 4);
    gu.resize(static_cast<size_t>(n * 2 * I));
    gemm(xin.data(), H, n, w.gate_up, e * 2 * I, 2 * I, nullptr, gu.data(), 2 * I, w.gate_up_scale);
    act.resize(static_cast<size_t>(n * I));
    for (int64_t i = 0; i < n; ++i)
      k_.silu_mul(gu.data() + i * 2 * I, gu.data() + i * 2 * I + I, act.data() + i * I, I);
    yo.resize(static_cast<size_t>(n * H));
    gemm(act.data(), I, n, w.down, e * H, H, nullptr, yo.data(), H, w.down_scale);
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(y.data() + r[i] * H, yo.data() + i * H, static_cast<size_t>(H) * 4);
  }
  float* op = out.data<float>();
  for (int64_t t = 0; t < T; ++t) {
    float* o = op + t * H;
    std::memset(o, 0, static_cast<size_t>(H) * 4);
    for (int64_t j = 0; j < K; ++j) k_.axpy(o, wp[t * K + j], y.data() + (t * K + j) * H, H);
  }
}

}  // namespace r1::backend::cpu
