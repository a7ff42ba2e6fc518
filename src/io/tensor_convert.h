// Bulk element conversion for loading: stored dtype (any safetensors dtype,
// possibly unaligned in the mapping) -> F32/BF16/F16, and FP8 block
// dequantization. Large conversions are split across threads.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace r1::io {

// True for the dtypes convert_elements and dequantize_fp8_blocks can write.
bool is_load_target(DType t);

// dst[i] = want(src[i]) for i in [0, n).
void convert_elements(const uint8_t* src, DType stored, void* dst, DType want, int64_t n);

// dst[r, c] = f8e4m3(q[r, c]) * scale[r / block_rows, c / block_cols], row-major,
// where scale is F32 [ceil(rows / block_rows), ceil(cols / block_cols)].
void dequantize_fp8_blocks(const uint8_t* q, int64_t rows, int64_t cols, const float* scale,
                           int64_t block_rows, int64_t block_cols, void* dst, DType want);

}  // namespace r1::io
