// Statement execution and expression evaluation. Scoping follows Jinja2: a
// for-loop iteration and a macro call get their own scope (assignments there
// do not leak out), if-blocks share the enclosing one; namespace() objects
// are how templates carry state out of loops.
#include "tokenizer/jinja/interpreter.h"

#include <cmath>

#include <fmt/format.h>

namespace r1::tok::jinja {

Value* Interpreter::Scope::find(const std::string& name) {
  for (Scope* s = this; s; s = s->parent) {
    for (auto& kv : s->vars) {
      if (kv.first == name) return &kv.second;
    }
  }
  return nullptr;
}

void Interpreter::Scope::set(const std::string& name, Value v) {
  for (auto& kv : vars) {
    if (kv.first == name) {
      kv.second = std::move(v);
      return;
    }
  }
  vars.emplace_back(name, std::move(v));
}

Interpreter::Interpreter(const RenderLimits& limits,
                         std::vector<std::pair<std::string, Value>> globals)
    : limits_(limits) {
  globals_.vars = default_globals();
  for (auto& kv : globals) globals_.set(kv.first, std::move(kv.second));
}

void Interpreter::fail(const std::string& message) const {
  throw TemplateError{
      fmt::format("template error at line {}, column {}: {}", pos_.line, pos_.column, message),
      pos_};
}

void Interpreter::fail_budget() const {
  throw TemplateError{
      fmt::format(
          "template error at line {}, column {}: template exceeded its step budget of {} steps",
          pos_.line, pos_.column, limits_.max_steps),
      pos_, true};
}

void Interpreter::check_size(size_t bytes) {
  if (bytes > limits_.max_output_bytes) {
    throw TemplateError{
        fmt::format("template error at line {}, column {}: value of {} bytes/items exceeds the "
                    "output budget of {} bytes",
                    pos_.line, pos_.column, bytes, limits_.max_output_bytes),
        pos_, true};
  }
}

void Interpreter::append(std::string& out, const std::string& text) {
  if (out.size() + text.size() > limits_.max_output_bytes) {
    throw TemplateError{
        fmt::format("template error at line {}, column {}: output exceeds the budget of {} bytes",
                    pos_.line, pos_.column, limits_.max_output_bytes),
        pos_, true};
  }
  charge(static_cast<int64_t>(text.size() >> 10));
  out += text;
}

std::string Interpreter::render(const std::vector<StmtPtr>& body) {
  Scope root;
  root.parent = &globals_;
  std::string out;
  exec_body(body, root, out);
  return out;
}

Interpreter::Flow Interpreter::exec_body(const std::vector<StmtPtr>& body, Scope& scope,
                                         std::string& out) {
  for (const auto& s : body) {
    Flow f = exec(*s, scope, out);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::exec(const Stmt& s, Scope& scope, std::string& out) {
  pos_ = s.pos;
  charge(1);
  switch (s.kind) {
    case StmtKind::kText:
      append(out, s.text);
      return Flow::kNormal;
    case StmtKind::kOutput: {
      Value v = eval(*s.expr, scope);
      pos_ = s.pos;
      append(out, to_py_str(v));
      return Flow::kNormal;
    }
    case StmtKind::kIf:
      if (eval(*s.expr, scope).truthy()) return exec_body(s.body, scope, out);
      return exec_body(s.else_body, scope, out);
    case StmtKind::kFor:
      return exec_for(s, scope, out);
    case StmtKind::kSet:
      exec_set(s, scope);
      return Flow::kNormal;
    case StmtKind::kSetBlock: {
      std::string captured;
      Flow f = exec_body(s.body, scope, captured);
      scope.set(s.targets[0], Value(std::move(captured)));
      return f;
    }
    case StmtKind::kMacro:
      define_macro(s, scope);
      return Flow::kNormal;
    case StmtKind::kBreak:
      return Flow::kBreak;
    case StmtKind::kContinue:
      return Flow::kContinue;
    case StmtKind::kBlock:
      return exec_body(s.body, scope, out);
    case StmtKind::kFilterBlock: {
      std::string captured;
      Flow f = exec_body(s.body, scope, captured);
      // Evaluate the filter chain with the captured text as the innermost operand.
      std::vector<const Expr*> chain;
      for (const Expr* e = s.filter.get(); e; e = e->args[0].get()) chain.push_back(e);
      Value v(std::move(captured));
      for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        CallArgs args;
        eval_call_args(**it, 1, scope, &args);
        pos_ = (*it)->pos;
        v = apply_filter(*this, (*it)->name, v, args);
      }
      append(out, to_py_str(v));
      return f;
    }
  }
  return Flow::kNormal;
}

void Interpreter::assign_targets(const std::vector<std::string>& targets, const Value& v,
                                 Scope& scope) {
  if (targets.size() == 1) {
    scope.set(targets[0], v);
    return;
  }
  std::vector<Value> items = iterate(*this, v);
  if (items.size() != targets.size()) {
    fail(fmt::format("cannot unpack {} values into {} names", items.size(), targets.size()));
  }
  for (size_t i = 0; i < targets.size(); ++i) scope.set(targets[i], items[i]);
}

Interpreter::Flow Interpreter::exec_for(const Stmt& s, Scope& scope, std::string& out) {
  Value iterable = eval(*s.expr, scope);
  pos_ = s.pos;
  std::vector<Value> items = iterate(*this, iterable);
  if (s.filter) {
    std::vector<Value> kept;
    for (auto& item : items) {
      charge(1);
      Scope probe;
      probe.parent = &scope;
      assign_targets(s.targets, item, probe);
      if (eval(*s.filter, probe).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) return exec_body(s.else_body, scope, out);

  auto loop = std::make_shared<LoopData>();
  loop->length = static_cast<int64_t>(items.size());
  if (const Value* outer = scope.find("loop"); outer && outer->is_loop())
    loop->depth0 = outer->loop().depth0 + 1;
  loop->items = std::make_shared<ListData>();
  loop->items->items = items;
  Value loop_value(loop);
  for (size_t i = 0; i < items.size(); ++i) {
    pos_ = s.pos;
    charge(1);
    loop->index0 = static_cast<int64_t>(i);
    Scope iter_scope;
    iter_scope.parent = &scope;
    assign_targets(s.targets, items[i], iter_scope);
    iter_scope.set("loop", loop_value);
    Flow f = exec_body(s.body, iter_scope, out);
    if (f == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

void Interpreter::exec_set(const Stmt& s, Scope& scope) {
  Value v = eval(*s.expr, scope);
  pos_ = s.pos;
  if (!s.attr.empty()) {
    Value* target = scope.find(s.targets[0]);
    if (!target || !target->is_namespace()) {
      fail(fmt::format(
          "cannot assign attribute '{}' on '{}': only namespace() objects can be assigned to",
          s.attr, s.targets[0]));
    }
    target->ns().attrs.set(s.attr, std::move(v));
    return;
  }
  assign_targets(s.targets, v, scope);
}

void Interpreter::define_macro(const Stmt& s, Scope& scope) {
  const Stmt* def = &s;
  Scope* defining = &scope;
  // Macros only live while the template renders, so capturing the defining
  // scope by pointer is safe as long as the macro is called from within it
  // or its children; a macro smuggled out of its scope would dangle, so we
  // bind macros to the root scope chain only.
  while (defining->parent && defining->parent != &globals_) defining = defining->parent;
  Value fn = Value::callable(s.name, [this, def, defining](Interpreter&, CallArgs& args) -> Value {
    if (++call_depth_ > limits_.max_call_depth) fail("macro calls nested too deeply");
    Scope call_scope;
    call_scope.parent = defining;
    if (args.positional.size() > def->params.size())
      fail(fmt::format("macro '{}' takes {} arguments", def->name, def->params.size()));
    for (size_t i = 0; i < def->params.size(); ++i) {
      const auto& p = def->params[i];
      if (i < args.positional.size()) {
        call_scope.set(p.name, args.positional[i]);
        continue;
      }
      bool found = false;
      for (auto& kv : args.keyword) {
        if (kv.first == p.name) {
          call_scope.set(p.name, kv.second);
          found = true;
        }
      }
      if (!found) {
        call_scope.set(p.name, p.default_value
                                   ? eval(*p.default_value, call_scope)
                                   : Value::undefined(fmt::format("'{}' is undefined", p.name)));
      }
    }
    for (auto& kv : args.keyword) {
      bool known = false;
      for (const auto& p : def->params) known = known || p.name == kv.first;
      if (!known) fail(fmt::format("macro '{}' has no argument named '{}'", def->name, kv.first));
    }
    std::string captured;
    exec_body(def->body, call_scope, captured);
    --call_depth_;
    return Value(std::move(captured));
  });
  scope.set(s.name, std::move(fn));
}

Value Interpreter::call(const Value& callee, CallArgs& args) {
  if (callee.is_undefined())
    fail(callee.undefined_hint().empty() ? "undefined value is not callable"
                                         : callee.undefined_hint());
  if (!callee.is_callable()) fail(fmt::format("'{}' object is not callable", callee.type_name()));
  return callee.fn().fn(*this, args);
}

void Interpreter::eval_call_args(const Expr& e, size_t first, Scope& scope, CallArgs* args) {
  for (size_t i = first; i < e.args.size(); ++i)
    args->positional.push_back(eval(*e.args[i], scope));
  for (const auto& kv : e.kwargs) args->keyword.emplace_back(kv.first, eval(*kv.second, scope));
}

Value Interpreter::eval(const Expr& e, Scope& scope) {
  pos_ = e.pos;
  charge(1);
  switch (e.kind) {
    case ExprKind::kLiteral:
      return e.literal;
    case ExprKind::kName: {
      if (Value* v = scope.find(e.name)) return *v;
      return Value::undefined(fmt::format("'{}' is undefined", e.name));
    }
    case ExprKind::kList:
    case ExprKind::kTuple: {
      std::vector<Value> items;
      items.reserve(e.args.size());
      for (const auto& a : e.args) items.push_back(eval(*a, scope));
      return Value::new_list(std::move(items), e.kind == ExprKind::kTuple);
    }
    case ExprKind::kDict: {
      Value d = Value::new_dict();
      for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
        Value k = eval(*e.args[i], scope);
        Value v = eval(*e.args[i + 1], scope);
        if (!k.is_string()) {
          pos_ = e.args[i]->pos;
          fail("only string keys are supported in dict literals");
        }
        d.dict().set(k.as_string(), std::move(v));
      }
      return d;
    }
    case ExprKind::kGetAttr: {
      Value obj = eval(*e.args[0], scope);
      pos_ = e.pos;
      return get_attribute(*this, obj, e.name);
    }
    case ExprKind::kGetItem: {
      Value obj = eval(*e.args[0], scope);
      Value key = eval(*e.args[1], scope);
      pos_ = e.pos;
      return get_item(*this, obj, key);
    }
    case ExprKind::kSlice: {
      Value obj = eval(*e.args[0], scope);
      Value parts[3];
      for (int i = 0; i < 3; ++i)
        parts[i] = e.args[i + 1] ? eval(*e.args[i + 1], scope) : Value::none();
      pos_ = e.pos;
      if (obj.is_undefined())
        fail(obj.undefined_hint().empty() ? "cannot slice an undefined value"
                                          : obj.undefined_hint());
      bool is_str = obj.is_string();
      if (!is_str && !obj.is_list())
        fail(fmt::format("'{}' object is not subscriptable", obj.type_name()));
      std::vector<char32_t> cps;
      int64_t n;
      if (is_str) {
        cps = utf8_decode(obj.as_string());
        n = static_cast<int64_t>(cps.size());
      } else {
        n = static_cast<int64_t>(obj.list().items.size());
      }
      auto to_int = [&](const Value& v) -> int64_t {
        if (v.is_int()) return v.as_int();
        if (v.is_bool()) return v.as_bool();
        fail("slice indices must be integers or None");
      };
      int64_t step = parts[2].is_none() ? 1 : to_int(parts[2]);
      if (step == 0) fail("slice step cannot be zero");
      auto clamp = [&](const Value& v, int64_t dflt) -> int64_t {
        if (v.is_none()) return dflt;
        int64_t x = to_int(v);
        if (x < 0) x += n;
        if (step > 0) return std::clamp<int64_t>(x, 0, n);
        return std::clamp<int64_t>(x, -1, n - 1);
      };
      int64_t start = clamp(parts[0], step > 0 ? 0 : n - 1);
      int64_t stop = clamp(parts[1], step > 0 ? n : -1);
      std::vector<int64_t> idx;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) idx.push_back(i);
      charge(static_cast<int64_t>(idx.size()));
      if (is_str) {
        std::string out;
        for (int64_t i : idx) utf8_append(out, cps[static_cast<size_t>(i)]);
        return Value(std::move(out));
      }
      std::vector<Value> items;
      items.reserve(idx.size());
      for (int64_t i : idx) items.push_back(obj.list().items[static_cast<size_t>(i)]);
      return Value::new_list(std::move(items), obj.list().is_tuple);
    }
    case ExprKind::kCall: {
      Value callee = eval(*e.args[0], scope);
      CallArgs args;
      eval_call_args(e, 1, scope, &args);
      pos_ = e.pos;
      return call(callee, args);
    }
    case ExprKind::kFilter: {
      Value v = eval(*e.args[0], scope);
      CallArgs args;
      eval_call_args(e, 1, scope, &args);
      pos_ = e.pos;
      return apply_filter(*this, e.name, v, args);
    }
    case ExprKind::kTest: {
      Value v = eval(*e.args[0], scope);
      CallArgs args;
      eval_call_args(e, 1, scope, &args);
      pos_ = e.pos;
      bool r = apply_test(*this, e.name, v, args);
      return Value(e.negated ? !r : r);
    }
    case ExprKind::kNot:
      return Value(!eval(*e.args[0], scope).truthy());
    case ExprKind::kNeg:
    case ExprKind::kPos: {
      Value v = eval(*e.args[0], scope);
      pos_ = e.pos;
      if (v.is_undefined())
        fail(v.undefined_hint().empty() ? "unary operator on an undefined value"
                                        : v.undefined_hint());
      if (e.kind == ExprKind::kPos) {
        if (!v.is_number()) fail(fmt::format("bad operand type for unary +: '{}'", v.type_name()));
        return v.is_bool() ? Value(int64_t(v.as_bool())) : v;
      }
      if (v.is_float()) return Value(-v.as_float());
      if (v.is_int()) return Value(-v.as_int());
      if (v.is_bool()) return Value(-int64_t(v.as_bool()));
      fail(fmt::format("bad operand type for unary -: '{}'", v.type_name()));
    }
    case ExprKind::kAnd: {
      Value l = eval(*e.args[0], scope);
      if (!l.truthy()) return l;
      return eval(*e.args[1], scope);
    }
    case ExprKind::kOr: {
      Value l = eval(*e.args[0], scope);
      if (l.truthy()) return l;
      return eval(*e.args[1], scope);
    }
    case ExprKind::kBinary:
      return eval_binary(e, scope);
    case ExprKind::kCompare:
      return eval_compare(e, scope);
    case ExprKind::kCondExpr: {
      if (eval(*e.args[1], scope).truthy()) return eval(*e.args[0], scope);
      if (e.args[2]) return eval(*e.args[2], scope);
      return Value::undefined(
          "the inline if-expression evaluated to false and no else section was defined");
    }
  }
  fail("internal: unknown expression");
}

Value Interpreter::eval_binary(const Expr& e, Scope& scope) {
  Value a = eval(*e.args[0], scope);
  Value b = eval(*e.args[1], scope);
  pos_ = e.pos;
  return binary_op(*this, e.name, a, b);
}

Value Interpreter::eval_compare(const Expr& e, Scope& scope) {
  Value left = eval(*e.args[0], scope);
  for (size_t i = 0; i < e.ops.size(); ++i) {
    Value right = eval(*e.args[i + 1], scope);
    pos_ = e.pos;
    const std::string& op = e.ops[i];
    bool r;
    if (op == "==")
      r = values_equal(left, right);
    else if (op == "!=")
      r = !values_equal(left, right);
    else if (op == "<")
      r = less_than(*this, left, right);
    else if (op == ">")
      r = less_than(*this, right, left);
    else if (op == "<=")
      r = !less_than(*this, right, left);
    else if (op == ">=")
      r = !less_than(*this, left, right);
    else if (op == "in")
      r = contains(*this, right, left);
    else
      r = !contains(*this, right, left);
    if (!r) return Value(false);
    left = std::move(right);
  }
  return Value(true);
}

}  // namespace r1::tok::jinja
