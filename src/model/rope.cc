// Frequencies follow transformers' rope utilities (which agree with DeepSeek's
// reference for the released configs): YaRN ramps between interpolated and
// extrapolated frequencies over the correction range of dimensions; llama3
// smooths between scaled and unscaled frequencies by wavelength.
#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace r1::model {

double yarn_get_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

namespace {

// Base frequencies as transformers computes them: in float32.
std::vector<float> base_inv_freq(double theta, int64_t dim) {
  std::vector<float> f(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    float expo = static_cast<float>(2 * i) / static_cast<float>(dim);
    f[static_cast<size_t>(i)] = 1.0f / std::pow(static_cast<float>(theta), expo);
  }
  return f;
}

double correction_dim(double rotations, int64_t dim, double base, double max_pos) {
  return (static_cast<double>(dim) * std::log(max_pos / (rotations * 2.0 * M_PI))) /
         (2.0 * std::log(base));
}

}  // namespace

backend::RopeParams make_rope_params(const io::ModelConfig& cfg, int64_t rot_dim) {
  backend::RopeParams p;
  p.interleaved = cfg.is_mla();
  const auto& r = cfg.rope;
  std::vector<float> inv = base_inv_freq(r.theta, rot_dim);
  if (r.type == io::RopeType::kYarn) {
    const double factor = r.factor;
    const double orig = static_cast<double>(
        r.original_max_position > 0 ? r.original_max_position : cfg.max_position_embeddings);
    double low = std::floor(correction_dim(r.beta_fast, rot_dim, r.theta, orig));
    double high = std::ceil(correction_dim(r.beta_slow, rot_dim, r.theta, orig));
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(rot_dim - 1));
    if (low == high) high += 0.001;
    for (size_t i = 0; i < inv.size(); ++i) {
      float ramp = static_cast<float>((static_cast<double>(i) - low) / (high - low));
      ramp = std::clamp(ramp, 0.0f, 1.0f);
      const float extrap_factor = 1.0f - ramp;
      const float expo = static_cast<float>(2 * i) / static_cast<float>(rot_dim);
      const float pos_freq = std::pow(static_cast<float>(r.theta), expo);
      const float extrap = 1.0f / pos_freq;
      const float interp = 1.0f / (static_cast<float>(factor) * pos_freq);
      inv[i] = interp * (1.0f - extrap_factor) + extrap * extrap_factor;
    }
    if (r.mscale != 0.0 && r.mscale_all_dim != 0.0) {
      p.attention_factor = static_cast<float>(yarn_get_mscale(factor, r.mscale) /
                                              yarn_get_mscale(factor, r.mscale_all_dim));
    } else {
      p.attention_factor = static_cast<float>(yarn_get_mscale(factor, 1.0));
    }
  } else if (r.type == io::RopeType::kLlama3) {
    const double orig = static_cast<double>(r.original_max_position);
    const double low_wavelen = orig / r.low_freq_factor;
    const double high_wavelen = orig / r.high_freq_factor;
    for (auto& f : inv) {
      const float wavelen = static_cast<float>(2.0 * M_PI) / f;
      float scaled = wavelen > low_wavelen ? f / static_cast<float>(r.factor) : f;
      const float smooth = static_cast<float>((orig / wavelen - r.low_freq_factor) /
                                              (r.high_freq_factor - r.low_freq_factor));
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      if (medium)
        scaled = (1.0f - smooth) * scaled / static_cast<float>(r.factor) + smooth * scaled;
      f = scaled;
    }
  }
  p.inv_freq = std::move(inv);
  return p;
}

}  // namespace r1::model
