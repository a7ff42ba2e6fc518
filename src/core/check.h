// R1_CHECK: internal invariants, checked loudly in every build. A failed check
// is a bug of ours, never a reaction to user input (that gets a Status).
#pragma once

#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

namespace r1::detail {
[[noreturn]] void check_failed(const char* file, int line, const char* cond,
                               const std::string& msg);
}  // namespace r1::detail

#define R1_CHECK(cond, ...)                                                                 \
  do {                                                                                      \
    if (!(cond)) [[unlikely]]                                                               \
      ::r1::detail::check_failed(__FILE__, __LINE__, #cond, ::fmt::format("" __VA_ARGS__)); \
  } while (0)
