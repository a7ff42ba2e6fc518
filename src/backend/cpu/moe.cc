// DeepSeekMoE on the CPU: the router (sigmoid or softmax scores, bias used for
// selection only, group-limited top-k, renormalization, scaling) and the
// routed experts (tokens grouped by expert, one gemm per projection per
// expert that has tokens, then a weighted combine in top-k order).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/check.h"

namespace r1::backend::cpu {

void CpuBackend::moe_route(const Tensor& router_logits, const Tensor& bias, const RouterParams& p,
                           Tensor& ids, Tensor& weights) {
  OpTimer timer(*this, [] { return std::string("moe_route"); });
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
  OpTimer timer(*this, [] { return std::string("moe_experts"); });
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
  const double expert_bytes =
      static_cast<double>(
          w.gate_up.nbytes() + w.down.nbytes() +
          (w.gate_up_scale.defined() ? w.gate_up_scale.nbytes() + w.down_scale.nbytes() : 0)) /
      static_cast<double>(E);
  for (const auto& r : rows)
    if (!r.empty()) timer.add_bytes(expert_bytes);
  // y[t * K + j] = Expert_{ids[t, j]}(x[t]). The gate_up products of a group
  // of experts run in one parallel_for, then their down products in another
  // (one fork-join per phase instead of one per expert: at decode that is the
  // cost that matters). Groups are capped in rows so that long prefills do not
  // hold every expert's intermediate at once. Each expert's gemm is the same
  // as alone, so results do not depend on the grouping.
  // Buffers live in the backend: fresh multi-MB vectors per call cost page
  // faults and zeroing on every prefill layer.
  std::lock_guard<std::mutex> lock(moe_mu_);  // should two threads share a backend
  std::vector<float>& y = moe_buf_[0];
  y.resize(static_cast<size_t>(T * K * H));
  const float* xp = x.data<float>();
  const Tensor* gu_scale = w.gate_up_scale.defined() ? &w.gate_up_scale : nullptr;
  const Tensor* down_scale = w.down_scale.defined() ? &w.down_scale : nullptr;
  const int64_t max_rows = std::max<int64_t>(1, (64 << 20) / ((2 * H + 3 * I) * 4));
  std::vector<float>& xin = moe_buf_[1];
  std::vector<float>& gu = moe_buf_[2];
  std::vector<float>& act = moe_buf_[3];
  std::vector<float>& yo = moe_buf_[4];
  std::vector<GemmJob> jobs;
  std::vector<int64_t> group, offset;
  for (int64_t e0 = 0; e0 < E;) {
    // Next group: experts with tokens from e0 on, up to max_rows rows.
    group.clear();
    offset.assign(1, 0);
    for (; e0 < E; ++e0) {
      const int64_t n = static_cast<int64_t>(rows[static_cast<size_t>(e0)].size());
      if (n == 0) continue;
      if (!group.empty() && offset.back() + n > max_rows) break;
      group.push_back(e0);
      offset.push_back(offset.back() + n);
    }
    if (group.empty()) break;
    const int64_t R = offset.back();
    xin.resize(static_cast<size_t>(R * H));
    gu.resize(static_cast<size_t>(R * 2 * I));
    act.resize(static_cast<size_t>(R * I));
    yo.resize(static_cast<size_t>(R * H));
    for (size_t g = 0; g < group.size(); ++g) {
      const auto& r = rows[static_cast<size_t>(group[g])];
      for (size_t i = 0; i < r.size(); ++i)
        std::memcpy(xin.data() + (offset[g] + static_cast<int64_t>(i)) * H, xp + (r[i] / K) * H,
                    static_cast<size_t>(H) * 4);
    }
    jobs.clear();
    for (size_t g = 0; g < group.size(); ++g)
      jobs.push_back({xin.data() + offset[g] * H, H, offset[g + 1] - offset[g], &w.gate_up,
                      group[g] * 2 * I, 2 * I, nullptr, gu.data() + offset[g] * 2 * I, 2 * I,
                      gu_scale});
    gemm_batch(jobs);
    pool_.parallel_for(R, std::max<int64_t>(1, 8192 / I), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        k_.silu_mul(gu.data() + i * 2 * I, gu.data() + i * 2 * I + I, act.data() + i * I, I);
    });
    jobs.clear();
    for (size_t g = 0; g < group.size(); ++g)
      jobs.push_back({act.data() + offset[g] * I, I, offset[g + 1] - offset[g], &w.down,
                      group[g] * H, H, nullptr, yo.data() + offset[g] * H, H, down_scale});
    gemm_batch(jobs);
    for (size_t g = 0; g < group.size(); ++g) {
      const auto& r = rows[static_cast<size_t>(group[g])];
      for (size_t i = 0; i < r.size(); ++i)
        std::memcpy(y.data() + r[i] * H, yo.data() + (offset[g] + static_cast<int64_t>(i)) * H,
                    static_cast<size_t>(H) * 4);
    }
  }
  float* op = out.data<float>();
  for (int64_t t = 0; t < T; ++t) {
    float* o = op + t * H;
    std::memset(o, 0, static_cast<size_t>(H) * 4);
    for (int64_t j = 0; j < K; ++j) k_.axpy(o, wp[t * K + j], y.data() + (t * K + j) * H, H);
  }
}

}  // namespace r1::backend::cpu
