// Unit tests of the Jinja interpreter, one construct at a time, with the
// output Jinja2 3.1 gives under transformers' settings (trim_blocks,
// lstrip_blocks), and the sandbox: budgets, host-attribute access, error
// positions.
#include <chrono>
#include <regex>

#include <gtest/gtest.h>

#include "tokenizer/jinja/template.h"

namespace r1::tok::jinja {
namespace {

using ojson = nlohmann::ordered_json;

std::string render(const std::string& src, const ojson& vars = ojson::object(),
                   const RenderLimits& limits = {}) {
  auto t = Template::parse(src);
  if (!t.is_ok()) return "PARSE ERROR: " + t.status().message();
  std::vector<std::pair<std::string, Value>> v;
  for (auto it = vars.begin(); it != vars.end(); ++it)
    v.emplace_back(it.key(), from_json(it.value()));
  auto r = t->render(std::move(v), limits);
  if (!r.is_ok()) return "ERROR: " + r.status().message();
  return r.value();
}

bool fails(const std::string& src, const ojson& vars = ojson::object()) {
  return render(src, vars).rfind("ERROR", 0) == 0 || render(src, vars).rfind("PARSE ERROR", 0) == 0;
}

TEST(Jinja, TextAndOutput) {
  EXPECT_EQ(render("hello"), "hello");
  EXPECT_EQ(render("{{ 'a' + 'b' }}"), "ab");
  EXPECT_EQ(render("{{ x }}", {{"x", 5}}), "5");
  EXPECT_EQ(render("{# comment #}x"), "x");
  EXPECT_EQ(render("{{ none }}|{{ None }}|{{ true }}|{{ False }}"), "None|None|True|False");
  EXPECT_EQ(render("{{ [1, 'a', none] }}"), "[1, 'a', None]");
  EXPECT_EQ(render("{{ {'k': 'v', 'n': 1.5} }}"), "{'k': 'v', 'n': 1.5}");
  EXPECT_EQ(render("{{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 10 / 4 }} {{ 7 // 2 }} {{ -7 // 2 }} "
                   "{{ -7 % 3 }} {{ 2 ** 10 }}"),
            "1.0 0.30000000000000004 1e+20 2.5 3 -4 2 1024");
  EXPECT_EQ(render("trailing newline\n"), "trailing newline");
}

TEST(Jinja, StringEscapes) {
  EXPECT_EQ(render(R"({{ 'a\nb\t"c"\'d\\e\x41\u4e2d' }})"), "a\nb\t\"c\"'d\\eA中");
  EXPECT_EQ(render(R"({{ "it's" }})"), "it's");
  EXPECT_EQ(render(R"({{ '\d' }})"), "\\d");
}

TEST(Jinja, WhitespaceControl) {
  EXPECT_EQ(render("a  {{- 'b' -}}  c"), "abc");
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it.
  EXPECT_EQ(render("{% if true %}\n  x\n{% endif %}\ny"), "  x\ny");
  EXPECT_EQ(render("line\n    {% if true %}yes{% endif %}\n"), "line\nyes");
  EXPECT_EQ(render("  {{ 'v' }}\n"), "  v");  // variables are not lstripped
  EXPECT_EQ(render("a\n  {%+ if true %}b{% endif %}"), "a\n  b");
  EXPECT_EQ(render("{% if true +%}\nb{% endif %}"), "\nb");
  EXPECT_EQ(render("x  {#- c -#}  y"), "xy");
  EXPECT_EQ(render("{% raw %}{{ not rendered }}{% endraw %}"), "{{ not rendered }}");
}

TEST(Jinja, IfElifElse) {
  const char* t = "{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %}";
  EXPECT_EQ(render(t, {{"x", 1}}), "one");
  EXPECT_EQ(render(t, {{"x", 2}}), "two");
  EXPECT_EQ(render(t, {{"x", 3}}), "many");
  EXPECT_EQ(render("{{ 'y' if x else 'n' }}{{ 'z' if not x }}", {{"x", false}}), "nz");
  EXPECT_EQ(render("{{ a or b }}|{{ a and b }}|{{ not a }}", {{"a", ""}, {"b", "B"}}), "B||True");
}

TEST(Jinja, ForLoops) {
  ojson v = {{"xs", {"a", "b", "c"}}};
  EXPECT_EQ(
      render(
          "{% for x in xs %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}",
          v),
      "1a,2b,3c");
  EXPECT_EQ(render("{% for x in xs %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ "
                   "loop.first }}{{ loop.length }} {% endfor %}",
                   v),
            "032True3 121False3 210False3 ");
  EXPECT_EQ(render("{% for x in xs if x != 'b' %}{{ x }}{{ loop.length }}{% endfor %}", v), "a2c2");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
                   {{"d", {{"z", 1}, {"a", 2}}}}),
            "z=1;a=2;");
  EXPECT_EQ(render("{% for k, v in d | items %}{{ k }}={{ v }};{% endfor %}",
                   {{"d", {{"z", 1}, {"a", 2}}}}),
            "z=1;a=2;");
  EXPECT_EQ(render("{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 "
                   "%}{% break %}{% endif %}{{ i }}{% endfor %}"),
            "02");
  EXPECT_EQ(render("{% for x in xs %}{{ loop.previtem | default('-') }}{{ loop.nextitem | "
                   "default('-') }} {% endfor %}",
                   v),
            "-b ac b- ");
  EXPECT_EQ(render("{% for x in xs[::-1] %}{{ x }}{% endfor %}", v), "cba");
  EXPECT_EQ(render("{% for c in 'héllo' %}{{ c }}.{% endfor %}"), "h.é.l.l.o.");
  EXPECT_EQ(render("{% for a in [1,2] %}{% for b in [3,4] %}{{ loop.depth }}{{ a }}{{ b }} {% "
                   "endfor %}{% endfor %}"),
            "213 214 223 224 ");
}

TEST(Jinja, SetAndScoping) {
  EXPECT_EQ(render("{% set x = 1 %}{% for i in [1,2] %}{% set x = 5 %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in [1,2,3] %}{% set ns.n = ns.n + i %}{% "
                   "endfor %}{{ ns.n }}"),
            "6");
  EXPECT_EQ(render("{% if true %}{% set y = 'in-if' %}{% endif %}{{ y }}"), "in-if");
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}"), "12");
  EXPECT_EQ(render("{% set s %}block {{ 1 + 1 }}{% endset %}[{{ s }}]"), "[block 2]");
  EXPECT_EQ(render("{% set ns = namespace(items=[]) %}{% for i in range(3) %}{% set ns.items = "
                   "ns.items + [i] %}{% endfor %}{{ ns.items }}"),
            "[0, 1, 2]");
  EXPECT_TRUE(fails("{% set x = 1 %}{% set x.y = 2 %}"));
}

TEST(Jinja, Macros) {
  EXPECT_EQ(render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ "
                   "greet('Bo') }} {{ greet('Al', punct='?') }}"),
            "Hi Bo! Hi Al?");
}

TEST(Jinja, AccessAndSlicing) {
  ojson v = {{"m", {{"role", "user"}, {"content", "hello"}}}, {"xs", {1, 2, 3, 4}}};
  EXPECT_EQ(render("{{ m.role }} {{ m['content'] }} {{ xs[0] }} {{ xs[-1] }} {{ xs.1 }}", v),
            "user hello 1 4 2");
  EXPECT_EQ(render("{{ xs[1:3] }} {{ xs[:2] }} {{ xs[::2] }} {{ xs[::-1] }} {{ 'abc'[1:] }} {{ "
                   "'中文字'[-1] }}",
                   v),
            "[2, 3] [1, 2] [1, 3] [4, 3, 2, 1] bc 字");
  EXPECT_EQ(render("[{{ m.missing }}]{{ m.missing is defined }}{{ xs[10] is defined }}", v),
            "[]FalseFalse");
  EXPECT_TRUE(fails("{{ m.missing.deeper }}", v));
  EXPECT_EQ(render("{{ m.get('role') }} {{ m.get('nope', 'dflt') }} {{ m.keys() | list }} {{ "
                   "m.values() | list }}",
                   v),
            "user dflt ['role', 'content'] ['user', 'hello']");
  EXPECT_EQ(render("{{ 'role' in m }} {{ 3 in xs }} {{ 'ell' in m.content }} {{ 9 not in xs }}", v),
            "True True True True");
}

TEST(Jinja, Tests) {
  ojson v = {{"s", "x"},
             {"d", ojson::object()},
             {"l", ojson::array()},
             {"n", nullptr},
             {"i", 3},
             {"f", 1.5},
             {"b", true}};
  EXPECT_EQ(render("{{ s is string }}{{ d is mapping }}{{ l is iterable }}{{ l is sequence }}{{ n "
                   "is none }}{{ i is number }}"
                   "{{ f is float }}{{ i is integer }}{{ b is boolean }}{{ b is true }}{{ b is "
                   "false }}{{ u is undefined }}"
                   "{{ u is defined }}{{ n is not none }}{{ i is odd }}{{ i is divisibleby 3 }}{{ "
                   "i is eq(3) }}",
                   v),
            "TrueTrueTrueTrueTrueTrueTrueTrueTrueTrueFalseTrueFalseFalseTrueTrueTrue");
}

TEST(Jinja, Filters) {
  ojson v = {{"items",
              {{{"name", "b"}, {"ok", true}},
               {{"name", "a"}, {"ok", false}},
               {{"name", "c"}, {"ok", true}}}}};
  EXPECT_EQ(render("{{ '  x  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ [1,2] | length }}|{{ 'héé' "
                   "| count }}"),
            "x|hi|2|3");
  EXPECT_EQ(render("{{ items | selectattr('ok') | map(attribute='name') | join(',') }}", v), "b,c");
  EXPECT_EQ(render("{{ items | rejectattr('ok') | map(attribute='name') | list }}", v), "['a']");
  EXPECT_EQ(render("{{ items | map(attribute='name') | sort | join }}", v), "abc");
  EXPECT_EQ(
      render("{{ items | sort(attribute='name', reverse=true) | map(attribute='name') | join }}",
             v),
      "cba");
  EXPECT_EQ(render("{{ [3,1,3,2] | unique | list }} {{ [1,2,3] | reverse | list }} {{ [1,2,3] | "
                   "first }}{{ [1,2,3] | last }}"),
            "[3, 1, 2] [3, 2, 1] 13");
  EXPECT_EQ(render("{{ 'Hello' | lower }}{{ 'Hello' | upper }}{{ 'hELLO wORLD' | capitalize }}|{{ "
                   "'hello world' | title }}"),
            "helloHELLOHello world|Hello World");
  EXPECT_EQ(render("{{ 'a-b-c' | replace('-', '+') }} {{ u | default('d') }} {{ '' | default('e', "
                   "true) }} {{ 3 | string }}"),
            "a+b+c d e 3");
  EXPECT_EQ(render("{{ '42' | int + 1 }} {{ 'x' | int }} {{ '2.5' | float }} {{ -3 | abs }} {{ "
                   "2.567 | round(2) }} {{ 2.5 | round }}"),
            "43 0 2.5 3 2.57 2.0");
  EXPECT_EQ(render("{{ 'a\nb' | indent(2) }}|{{ 'a\nb' | indent(2, true) }}"), "a\n  b|  a\n  b");
  EXPECT_EQ(render("{{ [1,2,3,4,5] | batch(2) | list }}"), "[[1, 2], [3, 4], [5]]");
  EXPECT_EQ(render("{{ [1,2,3] | sum }} {{ [4,2,8] | min }} {{ [4,2,8] | max }} {{ 'x' | safe }}"),
            "6 2 8 x");
  EXPECT_EQ(render("{{ {'b': 1, 'a': 2} | dictsort }}"), "[('a', 2), ('b', 1)]");
}

TEST(Jinja, ToJsonMatchesPythonJsonDumps) {
  ojson v = {{"t",
              {{"name", "f"},
               {"desc", "中文 \"q\" \\ \n 😀"},
               {"n", {1, 2.5, nullptr, true}},
               {"e", ojson::object()}}}};
  EXPECT_EQ(render("{{ t | tojson }}", v),
            R"({"name": "f", "desc": "中文 \"q\" \\ \n 😀", "n": [1, 2.5, null, true], "e": {}})");
  EXPECT_EQ(render("{{ t.n | tojson(indent=2) }}", v), "[\n  1,\n  2.5,\n  null,\n  true\n]");
  EXPECT_EQ(render("{{ {'b': 1, 'a': [1]} | tojson(sort_keys=true) }}"), R"({"a": [1], "b": 1})");
  EXPECT_EQ(render("{{ {'a': 'é'} | tojson(ensure_ascii=true) }}"), R"({"a": "\u00e9"})");
  EXPECT_EQ(render("{{ {'a': 1} | tojson(separators=(',', ':')) }}"), R"({"a":1})");
  EXPECT_EQ(render("{{ 'x<y>&' | tojson }}"),
            R"("x<y>&")");  // no HTML escaping, as in transformers
}

TEST(Jinja, StringMethods) {
  EXPECT_EQ(render("{{ '  a b  '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'xxaxx'.rstrip('x') }}|{{ "
                   "'\n\nq\n'.strip('\n') }}"),
            "a b|axx|xxa|q");
  EXPECT_EQ(render("{{ 'a</think>b</think>c'.split('</think>')[-1] }}|{{ ' a  b '.split() }}|{{ "
                   "'a,b,c'.split(',', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}"),
            "c|['a', 'b']|['a', 'b,c']|['a,b', 'c']");
  EXPECT_EQ(render("{{ 'hello'.startswith('he') }}{{ 'hello'.endswith(('x', 'lo')) }}{{ "
                   "'abc'.replace('b', 'B') }}{{ 'héllo'.find('l') }}"),
            "TrueTrueaBc2");
  EXPECT_EQ(render("{{ 'ab'.upper() }}{{ 'AB'.lower() }}{{ 'hi there'.title() }}{{ '{} and "
                   "{name}'.format(1, name='x') }}"),
            "ABabHi There1 and x");
  EXPECT_EQ(render("{{ ', '.join(['a', 'b']) }}"), "a, b");
}

TEST(Jinja, UndefinedSemantics) {
  EXPECT_EQ(render("[{{ nope }}]{{ nope | length }}{% for x in nope %}x{% endfor %}{{ 'a' ~ nope ~ "
                   "'b' }}{{ not nope }}"),
            "[]0abTrue");
  EXPECT_TRUE(fails("{{ nope + 'a' }}"));
  EXPECT_TRUE(fails("{{ nope.attr }}"));
  EXPECT_TRUE(fails("{{ nope['k'] }}"));
  EXPECT_TRUE(fails("{{ none + 'a' }}"));
  EXPECT_TRUE(fails("{{ 'a' in none }}"));
  EXPECT_TRUE(fails("{{ 'a' + 1 }}"));
}

TEST(Jinja, RaiseException) {
  std::string out = render("{{ raise_exception('Only user and assistant roles are supported!') }}");
  EXPECT_NE(out.find("Only user and assistant roles are supported!"), std::string::npos) << out;
}

TEST(Jinja, GenerationTagIsTransparent) {
  EXPECT_EQ(render("{% generation %}abc{% endgeneration %}"), "abc");
}

// ---- sandbox ----

TEST(JinjaSandbox, LoopBombRefusedFast) {
  auto start = std::chrono::steady_clock::now();
  std::string out =
      render("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}");
  auto ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(out.find("budget"), std::string::npos) << out.substr(0, 200);
  EXPECT_LT(ms, 100.0);
}

TEST(JinjaSandbox, LoopBombWithoutOutputRefusedFast) {
  auto start = std::chrono::steady_clock::now();
  std::string out = render(
      "{% set ns = namespace(n=0) %}{% for i in range(100000) %}{% for j in range(100000) %}"
      "{% set ns.n = ns.n + 1 %}{% endfor %}{% endfor %}{{ ns.n }}");
  auto ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(out.find("step budget"), std::string::npos) << out.substr(0, 200);
  EXPECT_LT(ms, 100.0);
}

TEST(JinjaSandbox, HugeValuesRefused) {
  EXPECT_NE(render("{{ range(10**10) | length }}").find("budget"), std::string::npos);
  EXPECT_NE(render("{{ 'x' * 1000000000 }}").find("budget"), std::string::npos);
  RenderLimits small;
  small.max_output_bytes = 1000;
  std::string out =
      render("{% for i in range(100) %}0123456789abcdef{% endfor %}", ojson::object(), small);
  EXPECT_NE(out.find("output exceeds"), std::string::npos) << out;
}

TEST(JinjaSandbox, HostAttributesUnreachable) {
  // SSTI payloads: attributes outside template data are undefined, and going
  // further fails harmlessly.
  EXPECT_EQ(render("[{{ ''.__class__ }}]"), "[]");
  EXPECT_TRUE(fails("{{ ''.__class__.__mro__[1].__subclasses__() }}"));
  EXPECT_TRUE(fails("{{ cycler.__init__.__globals__.os.popen('touch /tmp/r1_canary').read() }}"));
  EXPECT_TRUE(fails("{{ namespace.__init__.__globals__ }}"));
  EXPECT_TRUE(fails("{{ self.__dict__ }}"));
  EXPECT_TRUE(fails("{{ lipsum.__globals__['os'] }}"));
  EXPECT_TRUE(fails("{% set l = [1] %}{{ l.append(2) }}"));  // immutable sandbox
  EXPECT_TRUE(fails("{% include 'x.html' %}"));
  EXPECT_TRUE(fails("{% import 'os' as os %}"));
  EXPECT_TRUE(fails("{% extends 'base' %}"));
}

TEST(JinjaSandbox, ErrorsNameLineAndColumn) {
  auto t = Template::parse("ok\n{% if x %}\n  {% include 'f' %}\n{% endif %}");
  ASSERT_FALSE(t.is_ok());
  EXPECT_NE(t.status().message().find("line 3, column 6"), std::string::npos)
      << t.status().message();
  EXPECT_NE(t.status().message().find("include"), std::string::npos);

  auto bad_filter = Template::parse("{{ x | nosuchfilter }}");
  ASSERT_FALSE(bad_filter.is_ok());
  EXPECT_NE(bad_filter.status().message().find("line 1, column 8"), std::string::npos)
      << bad_filter.status().message();
  EXPECT_NE(bad_filter.status().message().find("nosuchfilter"), std::string::npos);

  auto syntax = Template::parse("{{ (1 + }}");
  ASSERT_FALSE(syntax.is_ok());
  EXPECT_NE(syntax.status().message().find("line 1"), std::string::npos);
  EXPECT_FALSE(Template::parse("{% if x %}never closed").is_ok());
  EXPECT_FALSE(Template::parse("{{ 'unterminated }}").is_ok());

  std::string runtime = render("line1\n  {{ 1 // 0 }}");
  EXPECT_NE(runtime.find("line 2, column "), std::string::npos) << runtime;
}

// Budget errors point into the template too, not only syntax errors.
TEST(JinjaSandbox, BudgetErrorsNameLineAndColumn) {
  const std::regex where(R"(line ([0-9]+), column [0-9]+)");
  std::smatch m;
  std::string steps = render(
      "header\n{% for i in range(100000) %}{% for j in range(100000) %}\n"
      "{% set x = j %}{% endfor %}{% endfor %}");
  EXPECT_NE(steps.find("step budget"), std::string::npos) << steps;
  ASSERT_TRUE(std::regex_search(steps, m, where)) << steps;
  EXPECT_GE(std::stoi(m[1]), 2) << steps;
  RenderLimits small;
  small.max_output_bytes = 100;
  std::string out =
      render("a\nb\n{% for i in range(100) %}0123456789{% endfor %}", ojson::object(), small);
  EXPECT_NE(out.find("output exceeds"), std::string::npos) << out;
  ASSERT_TRUE(std::regex_search(out, m, where)) << out;
  EXPECT_EQ(m[1], "3") << out;
}

TEST(JinjaSandbox, DeepNestingRefused) {
  std::string deep(5000, '(');
  EXPECT_FALSE(Template::parse("{{ " + deep + "1" + std::string(5000, ')') + " }}").is_ok());
  EXPECT_TRUE(fails("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"));
}

}  // namespace
}  // namespace r1::tok::jinja
