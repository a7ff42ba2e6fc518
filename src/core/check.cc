// The failure path of R1_CHECK: print and abort, so a debugger or core dump
// shows where the invariant broke.
#include "core/check.h"

namespace r1::detail {

void check_failed(const char* file, int line, const char* cond, const std::string& msg) {
  std::fprintf(stderr, "r1serve: internal check failed at %s:%d: %s %s\n", file, line, cond,
               msg.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace r1::detail
