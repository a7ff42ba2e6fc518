// Attribute and item access, the builtin filters and tests, and the global
// functions (range, dict, namespace, raise_exception). Attribute access is
// the sandbox boundary: only dict keys, namespace attributes, loop fields and
// a fixed list of read-only methods of str/dict/list are reachable; anything
// else (e.g. `__class__`) is undefined, and mutating methods refuse to run,
// like jinja2's ImmutableSandboxedEnvironment.
#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>

#include "tokenizer/jinja/builtins_util.h"
#include "tokenizer/jinja/interpreter.h"

namespace r1::tok::jinja {
namespace {

Value dict_items(const DictData& d) {
  std::vector<Value> items;
  for (const auto& kv : d.items)
    items.push_back(Value::new_list({Value(kv.first), kv.second}, true));
  return Value::new_list(std::move(items));
}

Value dict_method(const Value& obj, const std::string& name) {
  Value self = obj;
  if (name == "get") {
    return Value::callable("dict.get", [self](Interpreter& in, CallArgs& a) -> Value {
      const Value* key = arg(a, 0, "key");
      const Value* dflt = arg(a, 1, "default");
      if (!key) in.fail("get expected at least 1 argument");
      if (key->is_string()) {
        if (const Value* v = self.dict().find(key->as_string())) return *v;
      }
      return dflt ? *dflt : Value::none();
    });
  }
  if (name == "items")
    return Value::callable("dict.items",
                           [self](Interpreter&, CallArgs&) { return dict_items(self.dict()); });
  if (name == "keys" || name == "values") {
    bool keys = name == "keys";
    return Value::callable("dict." + name, [self, keys](Interpreter&, CallArgs&) {
      std::vector<Value> out;
      for (const auto& kv : self.dict().items) out.push_back(keys ? Value(kv.first) : kv.second);
      return Value::new_list(std::move(out));
    });
  }
  return Value();
}

Value unsafe_method(const std::string& type, const std::string& name) {
  return Value::callable(type + "." + name, [type, name](Interpreter& in, CallArgs&) -> Value {
    in.fail(fmt::format(
        "access to attribute '{}' of '{}' object is unsafe (templates cannot modify values)", name,
        type));
  });
}

bool is_mutating(const std::string& name) {
  static const std::set<std::string> kNames{"append",  "extend", "insert",  "pop",    "remove",
                                            "clear",   "sort",   "reverse", "update", "setdefault",
                                            "popitem", "add",    "discard"};
  return kNames.count(name) != 0;
}

Value loop_attribute(const LoopData& l, const std::string& name) {
  if (name == "index") return Value(l.index0 + 1);
  if (name == "index0") return Value(l.index0);
  if (name == "revindex") return Value(l.length - l.index0);
  if (name == "revindex0") return Value(l.length - l.index0 - 1);
  if (name == "first") return Value(l.index0 == 0);
  if (name == "last") return Value(l.index0 == l.length - 1);
  if (name == "length") return Value(l.length);
  if (name == "depth") return Value(l.depth0 + 1);
  if (name == "depth0") return Value(l.depth0);
  if (name == "previtem") {
    if (l.index0 == 0) return Value::undefined("there is no previous item");
    return l.items->items[static_cast<size_t>(l.index0 - 1)];
  }
  if (name == "nextitem") {
    if (l.index0 + 1 >= l.length) return Value::undefined("there is no next item");
    return l.items->items[static_cast<size_t>(l.index0 + 1)];
  }
  if (name == "cycle") {
    int64_t idx = l.index0;
    return Value::callable("loop.cycle", [idx](Interpreter& in, CallArgs& a) -> Value {
      if (a.positional.empty()) in.fail("no items for cycling given");
      return a.positional[static_cast<size_t>(idx) % a.positional.size()];
    });
  }
  return Value::undefined(fmt::format("'LoopContext object' has no attribute '{}'", name));
}

}  // namespace

Value get_attribute(Interpreter& in, const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      in.fail(obj.undefined_hint().empty()
                  ? fmt::format("undefined value has no attribute '{}'", name)
                  : obj.undefined_hint());
    case Value::Kind::kDict: {
      Value m = dict_method(obj, name);
      if (!m.is_undefined()) return m;
      if (is_mutating(name)) return unsafe_method("dict", name);
      if (const Value* v = obj.dict().find(name)) return *v;
      return Value::undefined(fmt::format("'dict object' has no attribute '{}'", name));
    }
    case Value::Kind::kNamespace:
      if (const Value* v = obj.ns().attrs.find(name)) return *v;
      return Value::undefined(fmt::format("'Namespace object' has no attribute '{}'", name));
    case Value::Kind::kString:
      return string_method(in, obj.as_string(), name);
    case Value::Kind::kList: {
      if (is_mutating(name)) return unsafe_method("list", name);
      if (name == "index" || name == "count") {
        Value self = obj;
        bool count = name == "count";
        return Value::callable("list." + name, [self, count](Interpreter& i, CallArgs& a) -> Value {
          const Value* x = arg(a, 0, "value");
          if (!x) i.fail("list method takes exactly one argument");
          int64_t n = 0;
          const auto& items = self.list().items;
          for (size_t k = 0; k < items.size(); ++k) {
            if (values_equal(items[k], *x)) {
              if (!count) return Value(static_cast<int64_t>(k));
              ++n;
            }
          }
          if (!count) i.fail("value is not in list");
          return Value(n);
        });
      }
      return Value::undefined(fmt::format("'list object' has no attribute '{}'", name));
    }
    case Value::Kind::kLoop:
      return loop_attribute(obj.loop(), name);
    default:
      return Value::undefined(
          fmt::format("'{} object' has no attribute '{}'", obj.type_name(), name));
  }
}

Value get_item(Interpreter& in, const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      in.fail(obj.undefined_hint().empty()
                  ? fmt::format("undefined value has no item {}", to_py_repr(key))
                  : obj.undefined_hint());
    case Value::Kind::kDict:
      if (key.is_string()) {
        if (const Value* v = obj.dict().find(key.as_string())) return *v;
        Value m = dict_method(obj, key.as_string());
        if (!m.is_undefined()) return m;
      }
      return Value::undefined(fmt::format("'dict object' has no attribute {}", to_py_repr(key)));
    case Value::Kind::kList:
    case Value::Kind::kString: {
      if (key.is_string()) return get_attribute(in, obj, key.as_string());
      if (!key.is_int() && !key.is_bool())
        in.fail(fmt::format("indices must be integers, not {}", key.type_name()));
      int64_t i = key.is_bool() ? key.as_bool() : key.as_int();
      if (obj.is_list()) {
        int64_t n = static_cast<int64_t>(obj.list().items.size());
        if (i < 0) i += n;
        if (i < 0 || i >= n)
          return Value::undefined(
              fmt::format("list object has no element {}", key.is_int() ? key.as_int() : i));
        return obj.list().items[static_cast<size_t>(i)];
      }
      auto cps = utf8_decode(obj.as_string());
      int64_t n = static_cast<int64_t>(cps.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined("string index out of range");
      std::string out;
      utf8_append(out, cps[static_cast<size_t>(i)]);
      return Value(std::move(out));
    }
    case Value::Kind::kNamespace:
    case Value::Kind::kLoop:
      if (key.is_string()) return get_attribute(in, obj, key.as_string());
      return Value::undefined("not subscriptable");
    default:
      return Value::undefined(
          fmt::format("'{} object' has no attribute {}", obj.type_name(), to_py_repr(key)));
  }
}

// ---- tests ----

bool test_exists(const std::string& name) {
  static const std::set<std::string> kTests{
      "defined",     "undefined", "none",        "string",  "mapping", "iterable", "sequence",
      "number",      "integer",   "float",       "boolean", "true",    "false",    "callable",
      "odd",         "even",      "divisibleby", "eq",      "equalto", "==",       "ne",
      "!=",          "lt",        "<",           "le",      "<=",      "gt",       ">",
      "greaterthan", "lessthan",  "ge",          ">=",      "in",      "lower",    "upper",
      "sameas",      "escaped",   "filter",      "test"};
  return kTests.count(name) != 0;
}

bool apply_test(Interpreter& in, const std::string& name, const Value& v, CallArgs& a) {
  using K = Value::Kind;
  const Value* other = arg(a, 0, "other");
  auto need_other = [&]() -> const Value& {
    if (!other) in.fail(fmt::format("test '{}' needs an argument", name));
    return *other;
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "sequence") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "callable") return v.is_callable();
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!v.is_int() && !v.is_bool()) in.fail(fmt::format("test '{}' needs an integer", name));
    int64_t x = v.is_bool() ? v.as_bool() : v.as_int();
    if (name == "odd") return x % 2 != 0;
    if (name == "even") return x % 2 == 0;
    int64_t d = int_arg(in, need_other(), "num");
    if (d == 0) in.fail("integer division or modulo by zero");
    return x % d == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") return values_equal(v, need_other());
  if (name == "ne" || name == "!=") return !values_equal(v, need_other());
  if (name == "lt" || name == "<" || name == "lessthan") return less_than(in, v, need_other());
  if (name == "gt" || name == ">" || name == "greaterthan") return less_than(in, need_other(), v);
  if (name == "le" || name == "<=") return !less_than(in, need_other(), v);
  if (name == "ge" || name == ">=") return !less_than(in, v, need_other());
  if (name == "in") return contains(in, need_other(), v);
  if (name == "lower") return v.is_string() && py_lower(v.as_string()) == v.as_string();
  if (name == "upper") return v.is_string() && py_upper(v.as_string()) == v.as_string();
  if (name == "sameas") {
    const Value& o = need_other();
    if (v.kind() != o.kind()) return false;
    switch (v.kind()) {
      case K::kNone:
        return true;
      case K::kBool:
        return v.as_bool() == o.as_bool();
      case K::kInt:
        return v.as_int() == o.as_int() && v.as_int() >= -5 && v.as_int() <= 256;
      case K::kList:
        return &v.list() == &o.list();
      case K::kDict:
        return &v.dict() == &o.dict();
      default:
        return values_equal(v, o);
    }
  }
  if (name == "escaped") return false;
  if (name == "filter") return v.is_string() && filter_exists(v.as_string());
  if (name == "test") return v.is_string() && test_exists(v.as_string());
  in.fail(fmt::format("unsupported test '{}'", name));
}

// ---- globals ----

std::vector<std::pair<std::string, Value>> default_globals() {
  std::vector<std::pair<std::string, Value>> g;
  g.emplace_back("range", Value::callable("range", [](Interpreter& in, CallArgs& a) -> Value {
                   if (!a.keyword.empty() || a.positional.empty() || a.positional.size() > 3)
                     in.fail("range expects 1 to 3 integer arguments");
                   int64_t v[3] = {0, 0, 0};
                   for (size_t i = 0; i < a.positional.size(); ++i)
                     v[i] = int_arg(in, a.positional[i], "range argument");
                   int64_t start = 0, stop, step = 1;
                   if (a.positional.size() == 1)
                     stop = v[0];
                   else {
                     start = v[0];
                     stop = v[1];
                     if (a.positional.size() == 3) step = v[2];
                   }
                   if (step == 0) in.fail("range() arg 3 must not be zero");
                   int64_t n = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
                                        : (start > stop ? (start - stop - step - 1) / (-step) : 0);
                   // Building the list costs one step per item: a huge range is refused
                   // before any memory is spent on it.
                   in.charge(n);
                   in.check_size(static_cast<size_t>(n));
                   std::vector<Value> items;
                   items.reserve(static_cast<size_t>(n));
                   for (int64_t i = 0; i < n; ++i) items.emplace_back(start + i * step);
                   return Value::new_list(std::move(items));
                 }));
  g.emplace_back("dict", Value::callable("dict", [](Interpreter& in, CallArgs& a) -> Value {
                   Value d = Value::new_dict();
                   if (!a.positional.empty()) {
                     const Value& src = a.positional[0];
                     if (src.is_dict())
                       d.dict().items = src.dict().items;
                     else if (src.is_list()) {
                       for (const auto& pair : src.list().items) {
                         if (!pair.is_list() || pair.list().items.size() != 2 ||
                             !pair.list().items[0].is_string()) {
                           in.fail("dict() needs (str, value) pairs");
                         }
                         d.dict().set(pair.list().items[0].as_string(), pair.list().items[1]);
                       }
                     } else {
                       in.fail("dict() argument must be a mapping or a list of pairs");
                     }
                   }
                   for (auto& kv : a.keyword) d.dict().set(kv.first, kv.second);
                   return d;
                 }));
  g.emplace_back("namespace",
                 Value::callable("namespace", [](Interpreter& in, CallArgs& a) -> Value {
                   auto ns = std::make_shared<NamespaceData>();
                   for (const auto& p : a.positional) {
                     if (!p.is_dict()) in.fail("namespace() positional arguments must be mappings");
                     for (const auto& kv : p.dict().items) ns->attrs.set(kv.first, kv.second);
                   }
                   for (auto& kv : a.keyword) ns->attrs.set(kv.first, kv.second);
                   return Value(std::move(ns));
                 }));
  g.emplace_back("raise_exception",
                 Value::callable("raise_exception", [](Interpreter& in, CallArgs& a) -> Value {
                   in.fail("raise_exception: " +
                           (a.positional.empty() ? std::string() : to_py_str(a.positional[0])));
                 }));
  return g;
}

}  // namespace r1::tok::jinja
