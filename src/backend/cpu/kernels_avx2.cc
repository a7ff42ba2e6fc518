// The avx2 build of the CPU kernels (see kernels_impl.inc).
#define R1_VLEN 8
#define R1_ISA_NS isa_avx2
#define R1_ISA_NAME "avx2"
#include "backend/cpu/kernels_impl.inc"

namespace r1::backend::cpu {
const Kernels& kernels_avx2() {
  return isa_avx2::table();
}
}  // namespace r1::backend::cpu
