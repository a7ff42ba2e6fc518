// Template values: what a Jinja expression can produce. Only these types exist
// inside the interpreter (no host objects), so attribute access can never
// reach anything outside the data the caller passed in. Lists, dicts and
// namespaces are shared by reference, as in Python.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace r1::tok::jinja {

class Value;
class Interpreter;

// Python's `None`.
struct NoneValue {};

// Jinja's default Undefined: prints as '', is falsy, iterates as empty, and
// errors on attribute access or arithmetic. `hint` names what was missing.
struct UndefinedValue {
  std::string hint;
};

struct ListData {
  std::vector<Value> items;
  bool is_tuple = false;
};

// An insertion-ordered dict with string keys (chat template data is JSON).
struct DictData {
  std::vector<std::pair<std::string, Value>> items;
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  void set(std::string key, Value v);
};

// namespace(...): the one mutable object templates may assign attributes to.
struct NamespaceData {
  DictData attrs;
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// A callable: a global function, a bound method of a template value, or a
// macro. Receives the interpreter to charge steps and report errors.
struct CallableData {
  std::string name;
  std::function<Value(Interpreter&, CallArgs&)> fn;
};

// The `loop` variable of a for loop.
struct LoopData {
  int64_t index0 = 0;
  int64_t length = 0;
  int64_t depth0 = 0;
  std::shared_ptr<ListData> items;  // the (filtered) items, for previtem/nextitem
};

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kCallable,
    kLoop
  };

  Value() : v_(UndefinedValue{}) {}
  static Value undefined(std::string hint = {}) {
    return Value(Storage(UndefinedValue{std::move(hint)}));
  }
  static Value none() { return Value(Storage(NoneValue{})); }
  Value(bool b) : v_(b) {}
  Value(int64_t i) : v_(i) {}
  Value(int i) : v_(static_cast<int64_t>(i)) {}
  Value(double d) : v_(d) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(std::shared_ptr<ListData> l) : v_(std::move(l)) {}
  Value(std::shared_ptr<DictData> d) : v_(std::move(d)) {}
  Value(std::shared_ptr<NamespaceData> n) : v_(std::move(n)) {}
  Value(std::shared_ptr<CallableData> c) : v_(std::move(c)) {}
  Value(std::shared_ptr<LoopData> l) : v_(std::move(l)) {}

  static Value new_list(std::vector<Value> items = {}, bool is_tuple = false);
  static Value new_dict();
  static Value callable(std::string name, std::function<Value(Interpreter&, CallArgs&)> fn);

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_float() const { return kind() == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_list() const { return kind() == Kind::kList; }
  bool is_dict() const { return kind() == Kind::kDict; }
  bool is_namespace() const { return kind() == Kind::kNamespace; }
  bool is_callable() const { return kind() == Kind::kCallable; }
  bool is_loop() const { return kind() == Kind::kLoop; }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  double as_float() const { return std::get<double>(v_); }
  // Numeric value of a bool/int/float as a double.
  double to_double() const;
  const std::string& as_string() const { return std::get<std::string>(v_); }
  ListData& list() const { return *std::get<std::shared_ptr<ListData>>(v_); }
  DictData& dict() const { return *std::get<std::shared_ptr<DictData>>(v_); }
  NamespaceData& ns() const { return *std::get<std::shared_ptr<NamespaceData>>(v_); }
  const CallableData& fn() const { return *std::get<std::shared_ptr<CallableData>>(v_); }
  LoopData& loop() const { return *std::get<std::shared_ptr<LoopData>>(v_); }
  const std::string& undefined_hint() const { return std::get<UndefinedValue>(v_).hint; }

  // Python truthiness.
  bool truthy() const;
  // Python's type name, for error messages ("str", "dict", ...).
  const char* type_name() const;

 private:
  using Storage = std::variant<UndefinedValue, NoneValue, bool, int64_t, double, std::string,
                               std::shared_ptr<ListData>, std::shared_ptr<DictData>,
                               std::shared_ptr<NamespaceData>, std::shared_ptr<CallableData>,
                               std::shared_ptr<LoopData>>;
  explicit Value(Storage s) : v_(std::move(s)) {}
  Storage v_;
};

// Python `==` between template values (1 == 1.0 == True; lists and dicts by content).
bool values_equal(const Value& a, const Value& b);

// Python `str(v)`; undefined prints as ''.
std::string to_py_str(const Value& v);
// Python `repr(v)`, used for items inside printed lists and dicts.
std::string to_py_repr(const Value& v);
// Python's repr of a float ("1.0", "1e-05", "1e+16", "inf", "nan").
std::string py_float_repr(double d);

// Conversions between JSON and template values. Object key order is kept.
Value from_json(const nlohmann::ordered_json& j);
// Fails (returns false, sets `error`) on values JSON cannot hold.
bool to_json(const Value& v, nlohmann::ordered_json* out, std::string* error);

// Python json.dumps(v, ensure_ascii=False, indent, separators, sort_keys), as
// transformers' tojson filter calls it. indent < 0 means None. Returns false
// and sets `error` for values JSON cannot hold (undefined, callables).
struct JsonDumpOptions {
  int indent = -1;
  std::string indent_str;  // when indent was given as a string
  bool indent_is_string = false;
  std::string item_sep;  // defaults: ", " (no indent) or "," (indent)
  std::string key_sep = ": ";
  bool has_item_sep = false;
  bool sort_keys = false;
  bool ensure_ascii = false;
};
bool py_json_dumps(const Value& v, const JsonDumpOptions& opt, std::string* out,
                   std::string* error);

// UTF-8 helpers: strings are stored as UTF-8 and indexed by code point, as in Python.
std::vector<char32_t> utf8_decode(std::string_view s);
std::string utf8_encode(const std::vector<char32_t>& cps);
void utf8_append(std::string& out, char32_t cp);
size_t utf8_length(std::string_view s);
bool is_py_space(char32_t c);

}  // namespace r1::tok::jinja
