// The generic build of the CPU kernels (see kernels_impl.inc).
#define R1_VLEN 4
#define R1_ISA_NS isa_generic
#define R1_ISA_NAME "generic"
#include "backend/cpu/kernels_impl.inc"

namespace r1::backend::cpu {
const Kernels& kernels_generic() {
  return isa_generic::table();
}
}  // namespace r1::backend::cpu
