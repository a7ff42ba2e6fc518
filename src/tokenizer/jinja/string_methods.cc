// Python str methods that chat templates call on template strings
// (strip/split/startswith/replace/...), with Python's semantics: indices are
// code points and the no-argument strip/split use Python's notion of
// whitespace. Methods that do not exist give undefined, as jinja's sandbox does.
#include <algorithm>

#include <fmt/format.h>

#include "tokenizer/jinja/builtins_util.h"
#include "tokenizer/jinja/interpreter.h"

namespace r1::tok::jinja {
namespace {

std::string strip_impl(const std::string& s, const Value* chars, bool left, bool right) {
  std::vector<char32_t> cps = utf8_decode(s);
  std::vector<char32_t> set;
  bool ws = !chars || chars->is_none();
  if (!ws) set = utf8_decode(chars->as_string());
  auto strip_it = [&](char32_t c) {
    return ws ? is_py_space(c) : std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_it(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_it(cps[e - 1])) --e;
  }
  return utf8_encode(std::vector<char32_t>(cps.begin() + static_cast<long>(b),
                                           cps.begin() + static_cast<long>(e)));
}

std::vector<std::string> split_ws(const std::string& s, int64_t maxsplit, bool from_right) {
  std::vector<char32_t> cps = utf8_decode(s);
  std::vector<std::string> parts;
  if (!from_right) {
    size_t i = 0, n = cps.size();
    while (true) {
      while (i < n && is_py_space(cps[i])) ++i;
      if (i >= n) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit) {
        size_t e = n;
        while (e > i && is_py_space(cps[e - 1])) --e;
        parts.push_back(
            utf8_encode(std::vector<char32_t>(cps.begin() + long(i), cps.begin() + long(e))));
        break;
      }
      size_t j = i;
      while (j < n && !is_py_space(cps[j])) ++j;
      parts.push_back(
          utf8_encode(std::vector<char32_t>(cps.begin() + long(i), cps.begin() + long(j))));
      i = j;
    }
    return parts;
  }
  long i = static_cast<long>(cps.size());
  while (true) {
    while (i > 0 && is_py_space(cps[size_t(i - 1)])) --i;
    if (i <= 0) break;
    if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit) {
      long b = 0;
      while (b < i && is_py_space(cps[size_t(b)])) ++b;
      parts.push_back(utf8_encode(std::vector<char32_t>(cps.begin() + b, cps.begin() + i)));
      break;
    }
    long j = i;
    while (j > 0 && !is_py_space(cps[size_t(j - 1)])) --j;
    parts.push_back(utf8_encode(std::vector<char32_t>(cps.begin() + j, cps.begin() + i)));
    i = j;
  }
  std::reverse(parts.begin(), parts.end());
  return parts;
}

std::vector<std::string> split_sep(const std::string& s, const std::string& sep, int64_t maxsplit,
                                   bool from_right) {
  std::vector<std::string> parts;
  if (!from_right) {
    size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
      size_t f = s.find(sep, start);
      if (f == std::string::npos) break;
      parts.push_back(s.substr(start, f - start));
      start = f + sep.size();
    }
    parts.push_back(s.substr(start));
    return parts;
  }
  size_t end = s.size();
  while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
    if (end < sep.size()) break;
    size_t f = s.rfind(sep, end - sep.size());
    if (f == std::string::npos) break;
    parts.push_back(s.substr(f + sep.size(), end - f - sep.size()));
    end = f;
  }
  parts.push_back(s.substr(0, end));
  std::reverse(parts.begin(), parts.end());
  return parts;
}

Value to_list(std::vector<std::string> parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (auto& p : parts) items.emplace_back(std::move(p));
  return Value::new_list(std::move(items));
}

bool affix_match(Interpreter& in, const std::string& s, const Value& affix, bool prefix) {
  auto one = [&](const Value& a) {
    if (!a.is_string()) in.fail("startswith/endswith argument must be str or a tuple of str");
    const std::string& x = a.as_string();
    if (x.size() > s.size()) return false;
    return prefix ? s.compare(0, x.size(), x) == 0
                  : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (affix.is_list()) {
    for (const auto& a : affix.list().items) {
      if (one(a)) return true;
    }
    return false;
  }
  return one(affix);
}

int64_t cp_index(const std::string& s, size_t byte_pos) {
  return static_cast<int64_t>(utf8_length(std::string_view(s).substr(0, byte_pos)));
}

std::string python_format(Interpreter& in, const std::string& fmt_str, CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt_str.size(); ++i) {
    char c = fmt_str[i];
    if (c == '{' && i + 1 < fmt_str.size() && fmt_str[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    if (c == '}' && i + 1 < fmt_str.size() && fmt_str[i + 1] == '}') {
      out += '}';
      ++i;
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    size_t close = fmt_str.find('}', i);
    if (close == std::string::npos) in.fail("str.format: single '{' encountered in format string");
    std::string field = fmt_str.substr(i + 1, close - i - 1);
    if (field.find_first_of(":!") != std::string::npos)
      in.fail("unsupported: format specs in str.format");
    const Value* v = nullptr;
    if (field.empty()) {
      if (auto_index < args.positional.size()) v = &args.positional[auto_index++];
    } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
      size_t k = std::stoul(field);
      if (k < args.positional.size()) v = &args.positional[k];
    } else {
      for (auto& kv : args.keyword) {
        if (kv.first == field) v = &kv.second;
      }
    }
    if (!v) in.fail(fmt::format("str.format: no argument for field '{{{}}}'", field));
    out += to_py_str(*v);
    i = close;
  }
  return out;
}

std::string ascii_map(const std::string& s, int (*f)(int)) {
  std::string out = s;
  for (auto& ch : out) {
    if (static_cast<unsigned char>(ch) < 0x80) ch = static_cast<char>(f(ch));
  }
  return out;
}

}  // namespace

std::string py_strip(const std::string& s, const Value* chars, bool left, bool right) {
  return strip_impl(s, chars, left, right);
}

std::string py_title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (char ch : s) {
    unsigned char u = static_cast<unsigned char>(ch);
    bool alpha = std::isalpha(u) != 0;
    if (alpha)
      out += static_cast<char>(prev_cased ? std::tolower(u) : std::toupper(u));
    else
      out += ch;
    prev_cased = alpha || u >= 0x80;
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  std::string out = ascii_map(s, ::tolower);
  if (!out.empty() && static_cast<unsigned char>(out[0]) < 0x80)
    out[0] = static_cast<char>(std::toupper(out[0]));
  return out;
}

std::string py_lower(const std::string& s) {
  return ascii_map(s, ::tolower);
}
std::string py_upper(const std::string& s) {
  return ascii_map(s, ::toupper);
}

std::string py_replace(Interpreter& in, const std::string& s, const std::string& old,
                       const std::string& repl, int64_t count) {
  std::string out;
  if (old.empty()) {
    auto cps = utf8_decode(s);
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += repl;
        ++done;
      }
      if (i < cps.size()) utf8_append(out, cps[i]);
      in.check_size(out.size());
    }
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t f = s.find(old, start);
    if (f == std::string::npos) break;
    out.append(s, start, f - start);
    out += repl;
    in.check_size(out.size());
    start = f + old.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  in.charge(static_cast<int64_t>(out.size() >> 8));
  return out;
}

Value string_method(Interpreter& in, const std::string& s, const std::string& name) {
  auto method = [&](auto body) {
    return Value::callable(
        "str." + name, [s, body](Interpreter& i, CallArgs& a) -> Value { return body(i, s, a); });
  };
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool l = name != "rstrip", r = name != "lstrip";
    return method([l, r](Interpreter& i, const std::string& str, CallArgs& a) -> Value {
      const Value* chars = arg(a, 0, "chars");
      if (chars && !chars->is_none() && !chars->is_string())
        i.fail("strip arg must be None or str");
      return Value(strip_impl(str, chars, l, r));
    });
  }
  if (name == "split" || name == "rsplit") {
    bool right = name == "rsplit";
    return method([right](Interpreter& i, const std::string& str, CallArgs& a) -> Value {
      const Value* sep = arg(a, 0, "sep");
      const Value* maxsplit = arg(a, 1, "maxsplit");
      int64_t m = maxsplit ? int_arg(i, *maxsplit, "maxsplit") : -1;
      i.charge(static_cast<int64_t>(str.size() >> 6));
      if (!sep || sep->is_none()) return to_list(split_ws(str, m, right));
      if (!sep->is_string()) i.fail("split separator must be str or None");
      if (sep->as_string().empty()) i.fail("empty separator");
      return to_list(split_sep(str, sep->as_string(), m, right));
    });
  }
  if (name == "splitlines") {
    return method([](Interpreter&, const std::string& str, CallArgs&) -> Value {
      std::vector<std::string> lines;
      size_t start = 0;
      for (size_t k = 0; k < str.size(); ++k) {
        if (str[k] == '\n' || str[k] == '\r') {
          lines.push_back(str.substr(start, k - start));
          if (str[k] == '\r' && k + 1 < str.size() && str[k + 1] == '\n') ++k;
          start = k + 1;
        }
      }
      if (start < str.size()) lines.push_back(str.substr(start));
      return to_list(std::move(lines));
    });
  }
  if (name == "startswith" || name == "endswith") {
    bool prefix = name == "startswith";
    return method([prefix](Interpreter& i, const std::string& str, CallArgs& a) -> Value {
      const Value* affix = arg(a, 0, "prefix");
      if (!affix) i.fail("startswith/endswith takes at least 1 argument");
      return Value(affix_match(i, str, *affix, prefix));
    });
  }
  if (name == "replace") {
    return method([](Interpreter& i, const std::string& str, CallArgs& a) -> Value {
      const Value* old = arg(a, 0, "old");
      const Value* repl = arg(a, 1, "new");
      const Value* count = arg(a, 2, "count");
      if (!old || !repl || !old->is_string() || !repl->is_string())
        i.fail("replace() takes two str arguments");
      return Value(py_replace(i, str, old->as_string(), repl->as_string(),
                              count ? int_arg(i, *count, "count") : -1));
    });
  }
  if (name == "upper")
    return method(
        [](Interpreter&, const std::string& str, CallArgs&) { return Value(py_upper(str)); });
  if (name == "lower")
    return method(
        [](Interpreter&, const std::string& str, CallArgs&) { return Value(py_lower(str)); });
  if (name == "title")
    return method(
        [](Interpreter&, const std::string& str, CallArgs&) { return Value(py_title(str)); });
  if (name == "capitalize") {
    return method(
        [](Interpreter&, const std::string& str, CallArgs&) { return Value(py_capitalize(str)); });
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    return method([name](Interpreter& i, const std::string& str, CallArgs& a) -> Value {
      const Value* sub = arg(a, 0, "sub");
      if (!sub || !sub->is_string()) i.fail(name + "() argument must be str");
      const std::string& x = sub->as_string();
      if (name == "count") {
        if (x.empty()) return Value(static_cast<int64_t>(utf8_length(str) + 1));
        int64_t n = 0;
        for (size_t p = str.find(x); p != std::string::npos; p = str.find(x, p + x.size())) ++n;
        return Value(n);
      }
      size_t p = (name == "find" || name == "index") ? str.find(x) : str.rfind(x);
      if (p == std::string::npos) {
        if (name == "index" || name == "rindex") i.fail("substring not found");
        return Value(int64_t{-1});
      }
      return Value(cp_index(str, p));
    });
  }
  if (name == "join") {
    return method([](Interpreter& i, const std::string& sep, CallArgs& a) -> Value {
      const Value* it = arg(a, 0, "iterable");
      if (!it) i.fail("join() takes exactly one argument");
      std::string out;
      bool first = true;
      for (const auto& v : iterate(i, *it)) {
        if (!v.is_string())
          i.fail(fmt::format("sequence item: expected str instance, {} found", v.type_name()));
        if (!first) out += sep;
        first = false;
        out += v.as_string();
        i.check_size(out.size());
      }
      return Value(std::move(out));
    });
  }
  if (name == "format") {
    return method([](Interpreter& i, const std::string& str, CallArgs& a) {
      return Value(python_format(i, str, a));
    });
  }
  if (name == "removeprefix" || name == "removesuffix") {
    bool prefix = name == "removeprefix";
    return method([prefix](Interpreter& i, const std::string& str, CallArgs& a) -> Value {
      const Value* x = arg(a, 0, "prefix");
      if (!x || !x->is_string()) i.fail("removeprefix/removesuffix argument must be str");
      if (affix_match(i, str, *x, prefix)) {
        size_t n = x->as_string().size();
        return Value(prefix ? str.substr(n) : str.substr(0, str.size() - n));
      }
      return Value(str);
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
      name == "islower" || name == "isupper") {
    return method([name](Interpreter&, const std::string& str, CallArgs&) -> Value {
      if (str.empty()) return Value(false);
      auto cps = utf8_decode(str);
      bool cased = false;
      for (char32_t c : cps) {
        bool ascii = c < 0x80;
        if (name == "isdigit" && !(ascii && std::isdigit(int(c)))) return Value(false);
        if (name == "isalpha" && ascii && !std::isalpha(int(c))) return Value(false);
        if (name == "isalnum" && ascii && !std::isalnum(int(c))) return Value(false);
        if (name == "isspace" && !is_py_space(c)) return Value(false);
        if (name == "islower" && ascii && std::isupper(int(c))) return Value(false);
        if (name == "isupper" && ascii && std::islower(int(c))) return Value(false);
        if (ascii && std::isalpha(int(c))) cased = true;
      }
      if (name == "islower" || name == "isupper") return Value(cased);
      return Value(true);
    });
  }
  (void)in;
  return Value::undefined(fmt::format("'str object' has no attribute '{}'", name));
}

}  // namespace r1::tok::jinja
