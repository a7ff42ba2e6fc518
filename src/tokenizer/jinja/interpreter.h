// Walks the syntax tree and renders output, enforcing the sandbox: a step
// budget (every statement, expression and loop iteration costs one step;
// building big strings and lists costs in proportion), an output budget, and
// a call-depth limit. Only template values exist, so there is nothing on the
// host to reach.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/value.h"

namespace r1::tok::jinja {

struct RenderLimits {
  // Real chat templates use a few thousand steps for a long conversation;
  // 500k steps take well under 100 ms to exhaust.
  int64_t max_steps = 500'000;
  size_t max_output_bytes = 16u << 20;  // also the cap for any one string or list
  int max_call_depth = 64;
};

class Interpreter {
 public:
  Interpreter(const RenderLimits& limits, std::vector<std::pair<std::string, Value>> globals);

  // Renders `body`; throws TemplateError.
  std::string render(const std::vector<StmtPtr>& body);

  // ---- used by builtins ----
  // Charges `steps` against the budget; throws when it is exhausted.
  void charge(int64_t steps) {
    steps_ += steps;
    if (steps_ > limits_.max_steps) fail_budget();
  }
  // Throws when a value of `bytes` (string) or `items` (list) would be too large.
  void check_size(size_t bytes);
  [[noreturn]] void fail(const std::string& message) const;
  Value call(const Value& callee, CallArgs& args);
  int64_t steps_used() const { return steps_; }

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  struct Scope {
    std::vector<std::pair<std::string, Value>> vars;
    Scope* parent = nullptr;
    Value* find(const std::string& name);
    void set(const std::string& name, Value v);
  };

  [[noreturn]] void fail_budget() const;
  Flow exec_body(const std::vector<StmtPtr>& body, Scope& scope, std::string& out);
  Flow exec(const Stmt& s, Scope& scope, std::string& out);
  Flow exec_for(const Stmt& s, Scope& scope, std::string& out);
  void exec_set(const Stmt& s, Scope& scope);
  void define_macro(const Stmt& s, Scope& scope);
  void append(std::string& out, const std::string& text);
  void assign_targets(const std::vector<std::string>& targets, const Value& v, Scope& scope);

  Value eval(const Expr& e, Scope& scope);
  Value eval_binary(const Expr& e, Scope& scope);
  Value eval_compare(const Expr& e, Scope& scope);
  void eval_call_args(const Expr& e, size_t first, Scope& scope, CallArgs* args);

  RenderLimits limits_;
  Scope globals_;
  int64_t steps_ = 0;
  int call_depth_ = 0;
  mutable SourcePos pos_;
};

// Python binary arithmetic and comparison on template values (used by the
// interpreter and by filters such as sort/sum/min/max).
Value binary_op(Interpreter& in, const std::string& op, const Value& a, const Value& b);
// Python `<`; errors on unorderable types.
bool less_than(Interpreter& in, const Value& a, const Value& b);
// Python `x in container`.
bool contains(Interpreter& in, const Value& container, const Value& x);
// Items of an iterable value (list items, dict keys, string characters).
std::vector<Value> iterate(Interpreter& in, const Value& v);

// Builtins (builtins.cc / string_methods.cc).
Value get_attribute(Interpreter& in, const Value& obj, const std::string& name);
Value get_item(Interpreter& in, const Value& obj, const Value& key);
Value apply_filter(Interpreter& in, const std::string& name, const Value& v, CallArgs& args);
bool apply_test(Interpreter& in, const std::string& name, const Value& v, CallArgs& args);
bool filter_exists(const std::string& name);
bool test_exists(const std::string& name);
Value string_method(Interpreter& in, const std::string& s, const std::string& name);
std::vector<std::pair<std::string, Value>> default_globals();

}  // namespace r1::tok::jinja
