// Host side of the counter-based weight generator (see random.h).
#include "core/random.h"

#include "core/check.h"

namespace r1 {

void fill_random_host(void* dst, DType dtype, int64_t n, const RandomFill& fill, uint64_t first) {
  R1_CHECK(dtype == DType::kF32 || dtype == DType::kBF16, "random fill of {}", dtype_name(dtype));
  if (dtype == DType::kF32) {
    float* p = static_cast<float*>(dst);
    for (int64_t i = 0; i < n; ++i) p[i] = random_value(fill, first + static_cast<uint64_t>(i));
  } else {
    uint16_t* p = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i)
      p[i] = f32_to_bf16(random_value(fill, first + static_cast<uint64_t>(i)));
  }
}

}  // namespace r1
