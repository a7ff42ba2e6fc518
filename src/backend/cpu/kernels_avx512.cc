// The avx512 build of the CPU kernels (see kernels_impl.inc).
#define R1_VLEN 16
#define R1_ISA_NS isa_avx512
#define R1_ISA_NAME "avx512"
#include "backend/cpu/kernels_impl.inc"

namespace r1::backend::cpu {
const Kernels& kernels_avx512() {
  return isa_avx512::table();
}
}  // namespace r1::backend::cpu
