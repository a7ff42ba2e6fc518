// Rotary-embedding frequencies from a ModelConfig: plain RoPE, YaRN (DeepSeek
// MLA, interleaved pairs) and llama3 frequency scaling (NeoX halves).
#pragma once

#include "backend/backend.h"
#include "io/model_config.h"

namespace r1::model {

// rot_dim: rotated dimensions (qk_rope_head_dim for MLA, head_dim for dense).
backend::RopeParams make_rope_params(const io::ModelConfig& cfg, int64_t rot_dim);

// YaRN's attention-temperature term: 0.1 * mscale * ln(scale) + 1 (1 if scale <= 1).
double yarn_get_mscale(double scale, double mscale);

}  // namespace r1::model
