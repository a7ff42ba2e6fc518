// The builtin filters, with Jinja2's semantics, and `tojson` as transformers
// overrides it: json.dumps(x, ensure_ascii=False, indent=None,
// separators=None, sort_keys=False) -- no HTML escaping.
#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>

#include "tokenizer/jinja/builtins_util.h"
#include "tokenizer/jinja/interpreter.h"

namespace r1::tok::jinja {
namespace {

// Follows a dotted attribute path ("function.name") like jinja's make_attrgetter.
Value attr_path(Interpreter& in, const Value& v, const std::string& path) {
  Value cur = v;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    cur = numeric ? get_item(in, cur, Value(static_cast<int64_t>(std::stoll(part))))
                  : get_item(in, cur, Value(part));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

std::vector<Value> list_of(Interpreter& in, const Value& v) {
  return iterate(in, v);
}

// select/reject/selectattr/rejectattr share this.
Value select_items(Interpreter& in, const Value& v, CallArgs& a, bool by_attr, bool keep) {
  size_t off = 0;
  std::string attr;
  if (by_attr) {
    if (a.positional.empty() || !a.positional[0].is_string())
      in.fail("selectattr/rejectattr need an attribute name");
    attr = a.positional[0].as_string();
    off = 1;
  }
  std::string test;
  CallArgs test_args;
  if (a.positional.size() > off) {
    if (!a.positional[off].is_string()) in.fail("test name must be a string");
    test = a.positional[off].as_string();
    test_args.positional.assign(a.positional.begin() + static_cast<long>(off) + 1,
                                a.positional.end());
  }
  std::vector<Value> out;
  for (const auto& item : list_of(in, v)) {
    in.charge(1);
    Value x = by_attr ? attr_path(in, item, attr) : item;
    bool r = test.empty() ? x.truthy() : apply_test(in, test, x, test_args);
    if (r == keep) out.push_back(item);
  }
  return Value::new_list(std::move(out));
}

std::string sort_key_string(const Value& v, bool case_sensitive) {
  return case_sensitive ? v.as_string() : py_lower(v.as_string());
}

Value sort_key(Interpreter& in, const Value& item, const std::string& attribute,
               bool case_sensitive) {
  Value k = attribute.empty() ? item : attr_path(in, item, attribute);
  if (k.is_string() && !case_sensitive) return Value(sort_key_string(k, false));
  return k;
}

std::string indent_filter(const std::string& s_in, const std::string& indention, bool first,
                          bool blank) {
  std::string s = s_in + "\n";
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t k = 0; k < s.size(); ++k) {
    if (s[k] == '\n') {
      lines.push_back(s.substr(start, k - start));
      start = k + 1;
    }
  }
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) rv.append("\n").append(indention);
      rv.append(lines[i]);
    }
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      rv.push_back('\n');
      if (!lines[i].empty()) rv.append(indention);
      rv.append(lines[i]);
    }
  }
  if (first) rv.insert(0, indention);
  return rv;
}

using FilterFn = Value (*)(Interpreter&, const Value&, CallArgs&);

Value f_tojson(Interpreter& in, const Value& v, CallArgs& a) {
  JsonDumpOptions opt;
  if (const Value* ea = arg(a, 0, "ensure_ascii")) opt.ensure_ascii = ea->truthy();
  if (const Value* ind = arg(a, 1, "indent"); ind && !ind->is_none()) {
    if (ind->is_string()) {
      opt.indent_is_string = true;
      opt.indent_str = ind->as_string();
    } else {
      opt.indent = static_cast<int>(std::max<int64_t>(0, int_arg(in, *ind, "indent")));
    }
  }
  if (const Value* sep = arg(a, 2, "separators"); sep && !sep->is_none()) {
    if (!sep->is_list() || sep->list().items.size() != 2 || !sep->list().items[0].is_string() ||
        !sep->list().items[1].is_string()) {
      in.fail("tojson separators must be a pair of strings");
    }
    opt.has_item_sep = true;
    opt.item_sep = sep->list().items[0].as_string();
    opt.key_sep = sep->list().items[1].as_string();
  }
  if (const Value* sk = arg(a, 3, "sort_keys")) opt.sort_keys = sk->truthy();
  std::string out, error;
  if (!py_json_dumps(v, opt, &out, &error)) in.fail("tojson: " + error);
  in.check_size(out.size());
  in.charge(static_cast<int64_t>(out.size() >> 8));
  return Value(std::move(out));
}

Value f_trim(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* chars = arg(a, 0, "chars");
  if (chars && !chars->is_none() && !chars->is_string()) in.fail("trim chars must be a string");
  return Value(py_strip(to_py_str(v), chars, true, true));
}

Value f_length(Interpreter& in, const Value& v, CallArgs&) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return Value(int64_t{0});
    case Value::Kind::kString:
      return Value(static_cast<int64_t>(utf8_length(v.as_string())));
    case Value::Kind::kList:
      return Value(static_cast<int64_t>(v.list().items.size()));
    case Value::Kind::kDict:
      return Value(static_cast<int64_t>(v.dict().items.size()));
    default:
      in.fail(fmt::format("object of type '{}' has no len()", v.type_name()));
  }
}

Value f_items(Interpreter& in, const Value& v, CallArgs&) {
  if (v.is_undefined()) return Value::new_list();
  if (!v.is_dict()) in.fail("items filter: can only get item pairs from a mapping");
  std::vector<Value> items;
  for (const auto& kv : v.dict().items)
    items.push_back(Value::new_list({Value(kv.first), kv.second}, true));
  return Value::new_list(std::move(items));
}

Value f_dictsort(Interpreter& in, const Value& v, CallArgs& a) {
  if (!v.is_dict()) in.fail("dictsort: value is not a mapping");
  const Value* cs = arg(a, 0, "case_sensitive");
  const Value* by = arg(a, 1, "by");
  const Value* rev = arg(a, 2, "reverse");
  bool by_value = by && by->is_string() && by->as_string() == "value";
  bool case_sensitive = cs && cs->truthy();
  std::vector<std::pair<std::string, Value>> items = v.dict().items;
  std::stable_sort(items.begin(), items.end(), [&](const auto& x, const auto& y) {
    Value kx = by_value ? x.second : Value(x.first);
    Value ky = by_value ? y.second : Value(y.first);
    if (kx.is_string() && !case_sensitive) kx = Value(py_lower(kx.as_string()));
    if (ky.is_string() && !case_sensitive) ky = Value(py_lower(ky.as_string()));
    return less_than(in, kx, ky);
  });
  if (rev && rev->truthy()) std::reverse(items.begin(), items.end());
  std::vector<Value> out;
  for (auto& kv : items) out.push_back(Value::new_list({Value(kv.first), kv.second}, true));
  return Value::new_list(std::move(out));
}

Value f_list(Interpreter& in, const Value& v, CallArgs&) {
  return Value::new_list(list_of(in, v));
}

Value f_join(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* d = arg(a, 0, "d");
  const Value* attribute = arg(a, 1, "attribute");
  std::string sep = d ? to_py_str(*d) : "";
  std::string out;
  bool first = true;
  for (const auto& item : list_of(in, v)) {
    if (!first) out += sep;
    first = false;
    out += to_py_str(attribute && !attribute->is_none() ? attr_path(in, item, to_py_str(*attribute))
                                                        : item);
    in.check_size(out.size());
  }
  in.charge(static_cast<int64_t>(out.size() >> 8));
  return Value(std::move(out));
}

Value f_first(Interpreter& in, const Value& v, CallArgs&) {
  auto items = list_of(in, v);
  return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
}

Value f_last(Interpreter& in, const Value& v, CallArgs&) {
  auto items = list_of(in, v);
  return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
}

Value f_lower(Interpreter&, const Value& v, CallArgs&) {
  return Value(py_lower(to_py_str(v)));
}
Value f_upper(Interpreter&, const Value& v, CallArgs&) {
  return Value(py_upper(to_py_str(v)));
}
Value f_capitalize(Interpreter&, const Value& v, CallArgs&) {
  return Value(py_capitalize(to_py_str(v)));
}
Value f_title(Interpreter&, const Value& v, CallArgs&) {
  return Value(py_title(to_py_str(v)));
}
Value f_string(Interpreter&, const Value& v, CallArgs&) {
  return Value(to_py_str(v));
}
Value f_safe(Interpreter&, const Value& v, CallArgs&) {
  return v;
}

Value f_escape(Interpreter&, const Value& v, CallArgs&) {
  std::string out;
  for (char c : to_py_str(v)) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return Value(std::move(out));
}

Value f_replace(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* old = arg(a, 0, "old");
  const Value* repl = arg(a, 1, "new");
  const Value* count = arg(a, 2, "count");
  if (!old || !repl) in.fail("replace filter needs two arguments");
  return Value(py_replace(in, to_py_str(v), to_py_str(*old), to_py_str(*repl),
                          count ? int_arg(in, *count, "count") : -1));
}

Value f_default(Interpreter&, const Value& v, CallArgs& a) {
  const Value* d = arg(a, 0, "default_value");
  const Value* boolean = arg(a, 1, "boolean");
  bool use_default = v.is_undefined() || (boolean && boolean->truthy() && !v.truthy());
  if (use_default) return d ? *d : Value("");
  return v;
}

Value f_int(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* d = arg(a, 0, "default");
  Value dflt = d ? *d : Value(int64_t{0});
  if (v.is_int()) return v;
  if (v.is_bool()) return Value(int64_t(v.as_bool()));
  if (v.is_float())
    return std::isfinite(v.as_float()) ? Value(static_cast<int64_t>(v.as_float())) : dflt;
  if (v.is_string()) {
    std::string s = py_strip(v.as_string(), nullptr, true, true);
    try {
      size_t used = 0;
      long long x = std::stoll(s, &used, 10);
      if (used == s.size()) return Value(static_cast<int64_t>(x));
      double f = std::stod(s, &used);
      if (used == s.size() && std::isfinite(f)) return Value(static_cast<int64_t>(f));
    } catch (...) {
    }
  }
  (void)in;
  return dflt;
}

Value f_float(Interpreter&, const Value& v, CallArgs& a) {
  const Value* d = arg(a, 0, "default");
  Value dflt = d ? *d : Value(0.0);
  if (v.is_number()) return Value(v.to_double());
  if (v.is_string()) {
    std::string s = py_strip(v.as_string(), nullptr, true, true);
    try {
      size_t used = 0;
      double f = std::stod(s, &used);
      if (used == s.size()) return Value(f);
    } catch (...) {
    }
  }
  return dflt;
}

Value f_abs(Interpreter& in, const Value& v, CallArgs&) {
  if (v.is_int()) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
  if (v.is_bool()) return Value(int64_t(v.as_bool()));
  if (v.is_float()) return Value(std::fabs(v.as_float()));
  in.fail(fmt::format("bad operand type for abs(): '{}'", v.type_name()));
}

Value f_round(Interpreter& in, const Value& v, CallArgs& a) {
  if (!v.is_number()) in.fail("round filter needs a number");
  const Value* p = arg(a, 0, "precision");
  const Value* m = arg(a, 1, "method");
  int64_t precision = p ? int_arg(in, *p, "precision") : 0;
  std::string method = m ? to_py_str(*m) : "common";
  double scale = std::pow(10.0, static_cast<double>(precision));
  double x = v.to_double() * scale;
  double r;
  if (method == "common")
    r = std::nearbyint(x);  // Python's round(): half to even
  else if (method == "ceil")
    r = std::ceil(x);
  else if (method == "floor")
    r = std::floor(x);
  else
    in.fail("method must be common, ceil or floor");
  return Value(r / scale);
}

Value f_select(Interpreter& in, const Value& v, CallArgs& a) {
  return select_items(in, v, a, false, true);
}
Value f_reject(Interpreter& in, const Value& v, CallArgs& a) {
  return select_items(in, v, a, false, false);
}
Value f_selectattr(Interpreter& in, const Value& v, CallArgs& a) {
  return select_items(in, v, a, true, true);
}
Value f_rejectattr(Interpreter& in, const Value& v, CallArgs& a) {
  return select_items(in, v, a, true, false);
}

Value f_map(Interpreter& in, const Value& v, CallArgs& a) {
  std::vector<Value> out;
  const Value* attribute = nullptr;
  const Value* dflt = nullptr;
  for (const auto& kv : a.keyword) {
    if (kv.first == "attribute") attribute = &kv.second;
    if (kv.first == "default") dflt = &kv.second;
  }
  if (attribute) {
    for (const auto& item : list_of(in, v)) {
      in.charge(1);
      Value x = attr_path(in, item, to_py_str(*attribute));
      out.push_back(x.is_undefined() && dflt ? *dflt : x);
    }
    return Value::new_list(std::move(out));
  }
  if (a.positional.empty() || !a.positional[0].is_string())
    in.fail("map needs a filter name or attribute=");
  std::string filter = a.positional[0].as_string();
  CallArgs rest;
  rest.positional.assign(a.positional.begin() + 1, a.positional.end());
  rest.keyword = a.keyword;
  for (const auto& item : list_of(in, v)) {
    in.charge(1);
    out.push_back(apply_filter(in, filter, item, rest));
  }
  return Value::new_list(std::move(out));
}

Value f_unique(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* cs = arg(a, 0, "case_sensitive");
  const Value* attribute = arg(a, 1, "attribute");
  bool case_sensitive = cs && cs->truthy();
  std::string attr = attribute && !attribute->is_none() ? to_py_str(*attribute) : "";
  std::vector<Value> out, seen;
  for (const auto& item : list_of(in, v)) {
    Value k = sort_key(in, item, attr, case_sensitive);
    bool dup = false;
    for (const auto& s : seen) dup = dup || values_equal(s, k);
    in.charge(static_cast<int64_t>(seen.size()));
    if (!dup) {
      seen.push_back(k);
      out.push_back(item);
    }
  }
  return Value::new_list(std::move(out));
}

Value f_reverse(Interpreter& in, const Value& v, CallArgs&) {
  if (v.is_string()) {
    auto cps = utf8_decode(v.as_string());
    std::reverse(cps.begin(), cps.end());
    return Value(utf8_encode(cps));
  }
  auto items = list_of(in, v);
  std::reverse(items.begin(), items.end());
  return Value::new_list(std::move(items));
}

Value f_sort(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* rev = arg(a, 0, "reverse");
  const Value* cs = arg(a, 1, "case_sensitive");
  const Value* attribute = arg(a, 2, "attribute");
  bool case_sensitive = cs && cs->truthy();
  std::string attr = attribute && !attribute->is_none() ? to_py_str(*attribute) : "";
  auto items = list_of(in, v);
  in.charge(static_cast<int64_t>(items.size()) * 4);
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& item : items) keyed.emplace_back(sort_key(in, item, attr, case_sensitive), item);
  bool reverse = rev && rev->truthy();
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? less_than(in, y.first, x.first) : less_than(in, x.first, y.first);
  });
  std::vector<Value> out;
  for (auto& kv : keyed) out.push_back(kv.second);
  return Value::new_list(std::move(out));
}

Value f_indent(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* width = arg(a, 0, "width");
  const Value* first = arg(a, 1, "first");
  const Value* blank = arg(a, 2, "blank");
  std::string indention;
  if (width && width->is_string())
    indention = width->as_string();
  else
    indention = std::string(
        static_cast<size_t>(std::max<int64_t>(0, width ? int_arg(in, *width, "width") : 4)), ' ');
  std::string out =
      indent_filter(to_py_str(v), indention, first && first->truthy(), blank && blank->truthy());
  in.check_size(out.size());
  return Value(std::move(out));
}

Value f_batch(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* count = arg(a, 0, "linecount");
  const Value* fill = arg(a, 1, "fill_with");
  int64_t n = count ? int_arg(in, *count, "linecount") : 0;
  if (n <= 0) in.fail("batch linecount must be positive");
  std::vector<Value> out, cur;
  for (const auto& item : list_of(in, v)) {
    cur.push_back(item);
    if (static_cast<int64_t>(cur.size()) == n) {
      out.push_back(Value::new_list(std::move(cur)));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (fill && !fill->is_none()) {
      while (static_cast<int64_t>(cur.size()) < n) cur.push_back(*fill);
    }
    out.push_back(Value::new_list(std::move(cur)));
  }
  return Value::new_list(std::move(out));
}

Value f_sum(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* attribute = arg(a, 0, "attribute");
  const Value* start = arg(a, 1, "start");
  Value acc = start ? *start : Value(int64_t{0});
  for (const auto& item : list_of(in, v)) {
    acc = binary_op(
        in, "+", acc,
        attribute && !attribute->is_none() ? attr_path(in, item, to_py_str(*attribute)) : item);
  }
  return acc;
}

Value min_max(Interpreter& in, const Value& v, CallArgs& a, bool want_max) {
  const Value* cs = arg(a, 0, "case_sensitive");
  const Value* attribute = arg(a, 1, "attribute");
  std::string attr = attribute && !attribute->is_none() ? to_py_str(*attribute) : "";
  auto items = list_of(in, v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  size_t best = 0;
  Value best_key = sort_key(in, items[0], attr, cs && cs->truthy());
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = sort_key(in, items[i], attr, cs && cs->truthy());
    if (want_max ? less_than(in, best_key, k) : less_than(in, k, best_key)) {
      best = i;
      best_key = k;
    }
  }
  return items[best];
}
Value f_min(Interpreter& in, const Value& v, CallArgs& a) {
  return min_max(in, v, a, false);
}
Value f_max(Interpreter& in, const Value& v, CallArgs& a) {
  return min_max(in, v, a, true);
}

Value f_wordcount(Interpreter& in, const Value& v, CallArgs&) {
  CallArgs none;
  Value words = string_method(in, to_py_str(v), "split");
  return Value(static_cast<int64_t>(in.call(words, none).list().items.size()));
}

Value f_center(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* width = arg(a, 0, "width");
  int64_t w = width ? int_arg(in, *width, "width") : 80;
  std::string s = to_py_str(v);
  int64_t len = static_cast<int64_t>(utf8_length(s));
  if (w <= len) return Value(s);
  in.check_size(static_cast<size_t>(w));
  int64_t total = w - len;
  int64_t left = total / 2 + (total & w & 1);
  return Value(std::string(static_cast<size_t>(left), ' ') + s +
               std::string(static_cast<size_t>(total - left), ' '));
}

Value f_attr(Interpreter& in, const Value& v, CallArgs& a) {
  const Value* name = arg(a, 0, "name");
  if (!name || !name->is_string()) in.fail("attr filter needs a name");
  return get_attribute(in, v, name->as_string());
}

struct FilterEntry {
  const char* name;
  FilterFn fn;
};

const FilterEntry kFilters[] = {
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"length", f_length},
    {"count", f_length},
    {"items", f_items},
    {"dictsort", f_dictsort},
    {"list", f_list},
    {"join", f_join},
    {"first", f_first},
    {"last", f_last},
    {"lower", f_lower},
    {"upper", f_upper},
    {"capitalize", f_capitalize},
    {"title", f_title},
    {"string", f_string},
    {"safe", f_safe},
    {"e", f_escape},
    {"escape", f_escape},
    {"forceescape", f_escape},
    {"replace", f_replace},
    {"default", f_default},
    {"d", f_default},
    {"int", f_int},
    {"float", f_float},
    {"abs", f_abs},
    {"round", f_round},
    {"select", f_select},
    {"reject", f_reject},
    {"selectattr", f_selectattr},
    {"rejectattr", f_rejectattr},
    {"map", f_map},
    {"unique", f_unique},
    {"reverse", f_reverse},
    {"sort", f_sort},
    {"indent", f_indent},
    {"batch", f_batch},
    {"sum", f_sum},
    {"min", f_min},
    {"max", f_max},
    {"wordcount", f_wordcount},
    {"center", f_center},
    {"attr", f_attr},
};

const FilterEntry* find_filter(const std::string& name) {
  for (const auto& f : kFilters) {
    if (name == f.name) return &f;
  }
  return nullptr;
}

}  // namespace

bool filter_exists(const std::string& name) {
  return find_filter(name) != nullptr;
}

Value apply_filter(Interpreter& in, const std::string& name, const Value& v, CallArgs& args) {
  const FilterEntry* f = find_filter(name);
  if (!f) in.fail(fmt::format("unsupported filter '{}'", name));
  return f->fn(in, v, args);
}

}  // namespace r1::tok::jinja
