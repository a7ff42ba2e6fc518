// Small helpers shared by the builtin filters, tests and methods: argument
// lookup by position or keyword, and the Python string operations that both
// filters and str methods use.
#pragma once

#include <string>

#include "tokenizer/jinja/interpreter.h"

namespace r1::tok::jinja {

// The argument at `index` among the positional ones, else the keyword `name`.
inline const Value* arg(const CallArgs& a, size_t index, const char* name) {
  if (index < a.positional.size()) return &a.positional[index];
  for (const auto& kv : a.keyword) {
    if (kv.first == name) return &kv.second;
  }
  return nullptr;
}

inline int64_t int_arg(Interpreter& in, const Value& v, const char* what) {
  if (v.is_int()) return v.as_int();
  if (v.is_bool()) return v.as_bool();
  if (v.is_none()) return -1;
  in.fail(std::string("'") + what + "' must be an integer");
}

std::string py_strip(const std::string& s, const Value* chars, bool left, bool right);
std::string py_title(const std::string& s);
std::string py_capitalize(const std::string& s);
std::string py_lower(const std::string& s);
std::string py_upper(const std::string& s);
std::string py_replace(Interpreter& in, const std::string& s, const std::string& old,
                       const std::string& repl, int64_t count);

}  // namespace r1::tok::jinja
