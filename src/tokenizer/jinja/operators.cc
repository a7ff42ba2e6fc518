// Python semantics of the arithmetic, ordering, membership and iteration
// operators on template values. Anything Python would reject with a
// TypeError is an error here too; undefined operands raise like Jinja's
// Undefined, except `~` which prints them as ''.
#include <cmath>

#include <fmt/format.h>

#include "tokenizer/jinja/interpreter.h"

namespace r1::tok::jinja {
namespace {

[[noreturn]] void undefined_error(Interpreter& in, const Value& v) {
  in.fail(v.undefined_hint().empty() ? "operation on an undefined value" : v.undefined_hint());
}

int64_t as_i(const Value& v) {
  return v.is_bool() ? int64_t(v.as_bool()) : v.as_int();
}

Value repeat(Interpreter& in, const Value& seq, int64_t times) {
  if (times < 0) times = 0;
  if (seq.is_string()) {
    const std::string& s = seq.as_string();
    in.check_size(s.size() * static_cast<size_t>(times));
    in.charge(static_cast<int64_t>(s.size() * static_cast<size_t>(times)) >> 8);
    std::string out;
    out.reserve(s.size() * static_cast<size_t>(times));
    for (int64_t i = 0; i < times; ++i) out += s;
    return Value(std::move(out));
  }
  const auto& items = seq.list().items;
  in.check_size(items.size() * static_cast<size_t>(times));
  in.charge(static_cast<int64_t>(items.size()) * times);
  std::vector<Value> out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), items.begin(), items.end());
  return Value::new_list(std::move(out), seq.list().is_tuple);
}

}  // namespace

Value binary_op(Interpreter& in, const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {
    std::string s = to_py_str(a) + to_py_str(b);
    in.check_size(s.size());
    in.charge(static_cast<int64_t>(s.size() >> 8));
    return Value(std::move(s));
  }
  if (a.is_undefined()) undefined_error(in, a);
  if (b.is_undefined()) undefined_error(in, b);
  auto type_error = [&]() -> Value {
    in.fail(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, a.type_name(),
                        b.type_name()));
  };
  if (a.is_number() && b.is_number()) {
    bool fl = a.is_float() || b.is_float();
    if (op == "/") {
      double y = b.to_double();
      if (y == 0.0) in.fail("division by zero");
      return Value(a.to_double() / y);
    }
    if (op == "**") {
      if (!fl && as_i(b) >= 0) {
        double r = std::pow(a.to_double(), b.to_double());
        if (std::fabs(r) < 9.2e18) {
          int64_t acc = 1;
          for (int64_t i = 0; i < as_i(b); ++i) acc *= as_i(a);
          return Value(acc);
        }
        in.fail("integer power too large");
      }
      return Value(std::pow(a.to_double(), b.to_double()));
    }
    if (fl) {
      double x = a.to_double(), y = b.to_double();
      if (op == "+") return Value(x + y);
      if (op == "-") return Value(x - y);
      if (op == "*") return Value(x * y);
      if (y == 0.0 && (op == "//" || op == "%")) in.fail("float division by zero");
      if (op == "//") return Value(std::floor(x / y));
      if (op == "%") {
        double m = std::fmod(x, y);
        if (m != 0.0 && ((m < 0) != (y < 0))) m += y;
        return Value(m);
      }
    } else {
      int64_t x = as_i(a), y = as_i(b), r = 0;
      if (op == "+" && !__builtin_add_overflow(x, y, &r)) return Value(r);
      if (op == "-" && !__builtin_sub_overflow(x, y, &r)) return Value(r);
      if (op == "*" && !__builtin_mul_overflow(x, y, &r)) return Value(r);
      if (op == "//" || op == "%") {
        if (y == 0) in.fail("integer division or modulo by zero");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return Value(op == "//" ? q : m);
      }
      in.fail("integer overflow");
    }
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      in.check_size(a.as_string().size() + b.as_string().size());
      in.charge(static_cast<int64_t>((a.as_string().size() + b.as_string().size()) >> 8));
      return Value(a.as_string() + b.as_string());
    }
    if (a.is_list() && b.is_list()) {
      std::vector<Value> items = a.list().items;
      in.check_size(items.size() + b.list().items.size());
      in.charge(static_cast<int64_t>(items.size() + b.list().items.size()));
      items.insert(items.end(), b.list().items.begin(), b.list().items.end());
      return Value::new_list(std::move(items), a.list().is_tuple);
    }
    return type_error();
  }
  if (op == "*") {
    if ((a.is_string() || a.is_list()) && (b.is_int() || b.is_bool()))
      return repeat(in, a, as_i(b));
    if ((b.is_string() || b.is_list()) && (a.is_int() || a.is_bool()))
      return repeat(in, b, as_i(a));
    return type_error();
  }
  if (op == "%" && a.is_string()) in.fail("unsupported: printf-style string formatting with %");
  return type_error();
}

bool less_than(Interpreter& in, const Value& a, const Value& b) {
  if (a.is_undefined()) undefined_error(in, a);
  if (b.is_undefined()) undefined_error(in, b);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.to_double() < b.to_double();
    return as_i(a) < as_i(b);
  }
  if (a.is_string() && b.is_string())
    return a.as_string() < b.as_string();  // UTF-8 order == code point order
  if (a.is_list() && b.is_list()) {
    const auto& x = a.list().items;
    const auto& y = b.list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!values_equal(x[i], y[i])) return less_than(in, x[i], y[i]);
    }
    return x.size() < y.size();
  }
  in.fail(fmt::format("'<' not supported between instances of '{}' and '{}'", a.type_name(),
                      b.type_name()));
}

bool contains(Interpreter& in, const Value& container, const Value& x) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;  // Undefined iterates as empty
    case Value::Kind::kString:
      if (!x.is_string())
        in.fail(
            fmt::format("'in <string>' requires string as left operand, not {}", x.type_name()));
      in.charge(static_cast<int64_t>(container.as_string().size() >> 8));
      return container.as_string().find(x.as_string()) != std::string::npos;
    case Value::Kind::kList:
      in.charge(static_cast<int64_t>(container.list().items.size()));
      for (const auto& item : container.list().items) {
        if (values_equal(item, x)) return true;
      }
      return false;
    case Value::Kind::kDict:
      if (!x.is_string()) return false;
      return container.dict().find(x.as_string()) != nullptr;
    case Value::Kind::kNamespace:
      if (!x.is_string()) return false;
      return container.ns().attrs.find(x.as_string()) != nullptr;
    default:
      in.fail(fmt::format("argument of type '{}' is not iterable", container.type_name()));
  }
}

std::vector<Value> iterate(Interpreter& in, const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList:
      in.charge(static_cast<int64_t>(v.list().items.size()) / 16);
      return v.list().items;
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      for (const auto& kv : v.dict().items) keys.emplace_back(kv.first);
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      for (char32_t c : utf8_decode(v.as_string())) {
        std::string s;
        utf8_append(s, c);
        chars.emplace_back(std::move(s));
      }
      in.charge(static_cast<int64_t>(chars.size()) / 16);
      return chars;
    }
    default:
      in.fail(fmt::format("'{}' object is not iterable", v.type_name()));
  }
}

}  // namespace r1::tok::jinja
