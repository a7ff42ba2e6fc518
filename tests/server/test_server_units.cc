// Unit tests of the server's pure parts: request validation (a table of bad
// parameters -> 400 naming the param), the R1 reasoning parser, the DeepSeek
// tool-call parser, SSE framing, metrics text, constant-time compare and the
// auth allowlist over the real route table.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "server/auth.h"
#include "server/metrics.h"
#include "server/reasoning_parser.h"
#include "server/request_parser.h"
#include "server/routes.h"
#include "server/sse.h"
#include "server/tool_call_parser.h"

namespace r1::server {
namespace {

RequestLimits limits() {
  RequestLimits l;
  l.max_model_len = 4096;
  l.vocab_size = 129280;
  return l;
}

std::string chat_with(const std::string& field) {
  return R"({"model":"m","messages":[{"role":"user","content":"hi"}])" +
         (field.empty() ? "" : "," + field) + "}";
}

TEST(RequestParser, AcceptsAFullRequest) {
  ParsedRequest p;
  auto err =
      parse_request(chat_with(R"("max_tokens":5,"temperature":0.5,"top_p":0.9,"top_k":5,"min_p":0.1,
      "presence_penalty":1,"frequency_penalty":-1,"repetition_penalty":1.1,"logit_bias":{"5":10},"seed":3,
      "stop":["a","b"],"n":2,"logprobs":true,"top_logprobs":3,"user":"u","stream":true,
      "stream_options":{"include_usage":true},"ignore_eos":true,"min_tokens":1,"skip_special_tokens":false,
      "unknown_field":{"x":1})"),
                    Endpoint::kChat, limits(), p);
  ASSERT_FALSE(err) << err->message;
  EXPECT_EQ(p.params.n, 2);
  EXPECT_EQ(p.params.logprobs, 3);
  EXPECT_TRUE(p.include_usage);
  EXPECT_EQ(*p.max_tokens, 5);
  EXPECT_EQ(p.params.stop.size(), 2u);
}

TEST(RequestParser, StripsEarlierReasoning) {
  ParsedRequest p;
  auto err = parse_request(
      R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"<think>r</think>\n\nA","reasoning_content":"r"},{"role":"user","content":[{"type":"text","text":"x"},{"type":"text","text":"y"}]}]})",
      Endpoint::kChat, limits(), p);
  ASSERT_FALSE(err);
  EXPECT_EQ(p.messages[1]["content"], "\n\nA");
  EXPECT_FALSE(p.messages[1].contains("reasoning_content"));
  EXPECT_EQ(p.messages[2]["content"], "x\ny");
}

struct BadCase {
  std::string field;
  std::string param;
};

std::vector<BadCase> bad_cases() {
  std::vector<BadCase> c;
  const std::vector<std::string> wrong = {"\"s\"", "true", "[1]", "{}", "1.5"};
  auto ints = [&](const std::string& name, std::vector<std::string> bad_values) {
    for (const auto& v : bad_values) c.push_back({fmt::format("\"{}\":{}", name, v), name});
    for (const auto& w : wrong) c.push_back({fmt::format("\"{}\":{}", name, w), name});
  };
  ints("n", {"0", "-1", "17", "1000000", "9223372036854775807", "18446744073709551615",
             "-9223372036854775808"});
  ints("max_tokens", {"0", "-5", "4097", "9223372036854775807", "1e9"});
  ints("max_completion_tokens", {"0", "4097", "-1"});
  ints("top_logprobs", {"-1", "21", "100"});
  ints("top_k", {"-2", "2000000"});
  ints("min_tokens", {"-1", "5000"});
  auto nums = [&](const std::string& name, std::vector<std::string> bad_values) {
    for (const auto& v : bad_values) c.push_back({fmt::format("\"{}\":{}", name, v), name});
    for (const auto& w : {"\"s\"", "true", "[1]", "{}"})
      c.push_back({fmt::format("\"{}\":{}", name, w), name});
  };
  nums("temperature", {"-0.1", "2.01", "1e308", "-1e308"});
  nums("top_p", {"0", "-0.5", "1.01"});
  nums("min_p", {"-0.1", "1.5"});
  nums("presence_penalty", {"-2.1", "2.1"});
  nums("frequency_penalty", {"-3", "3"});
  nums("repetition_penalty", {"0", "-1", "2.5"});
  for (const auto& v : {"1.5", "\"1\"", "true", "[]"})
    c.push_back({fmt::format("\"seed\":{}", v), "seed"});
  for (const auto& v : {"1", "true", "[1]", "[\"\"]", "[\"a\",\"b\",\"c\",\"d\",\"e\"]", "\"\""}) {
    c.push_back({fmt::format("\"stop\":{}", v), "stop"});
  }
  c.push_back({"\"stop\":\"" + std::string(300, 'x') + "\"", "stop"});
  for (const auto& v :
       {"[]", "1", "\"x\"", "{\"x\":1}", "{\"-1\":1}", "{\"129280\":1}", "{\"5\":101}",
        "{\"5\":-101}", "{\"5\":\"1\"}", "{\"99999999999\":1}", "{\"\":1}"}) {
    c.push_back({fmt::format("\"logit_bias\":{}", v), "logit_bias"});
  }
  {
    std::string big = "\"logit_bias\":{";
    for (int i = 0; i < 301; ++i) big += fmt::format("{}\"{}\":1", i ? "," : "", i);
    c.push_back({big + "}", "logit_bias"});
  }
  for (const auto& v : {"1", "\"x\"", "[]", "{}"})
    c.push_back({fmt::format("\"stream\":{}", v), "stream"});
  c.push_back({"\"stream_options\":{\"include_usage\":true}", "stream_options"});
  c.push_back({"\"stream\":true,\"stream_options\":1", "stream_options"});
  c.push_back({"\"stream\":true,\"stream_options\":{\"include_usage\":1}", "include_usage"});
  for (const auto& v : {"1", "\"x\"", "[]"})
    c.push_back({fmt::format("\"logprobs\":{}", v), "logprobs"});
  c.push_back({"\"top_logprobs\":2", "top_logprobs"});
  for (const auto& v : {"1", "[]", "{}"}) c.push_back({fmt::format("\"user\":{}", v), "user"});
  for (const auto& v :
       {"1", "{}", "[1]", "[{\"type\":\"x\"}]", "[{\"type\":\"function\"}]",
        "[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]",
        "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":1}}]"}) {
    c.push_back({fmt::format("\"tools\":{}", v), "tools"});
  }
  for (const auto& v : {"1", "\"maybe\"", "{}", "\"required\""}) {
    c.push_back({fmt::format("\"tool_choice\":{}", v), "tool_choice"});
  }
  for (const auto& v : {"1", "\"a\""})
    c.push_back({fmt::format("\"ignore_eos\":{}", v), "ignore_eos"});
  c.push_back({"\"best_of\":3", "best_of"});
  c.push_back({"\"response_format\":{\"type\":\"json_schema\"}", "response_format"});
  c.push_back({"\"reasoning_effort\":\"max\"", "reasoning_effort"});
  c.push_back({"\"chat_template_kwargs\":1", "chat_template_kwargs"});
  c.push_back({"\"chat_template_kwargs\":{\"bos_token\":\"x\"}", "chat_template_kwargs"});
  c.push_back({"\"max_tokens\":5,\"min_tokens\":6", "min_tokens"});
  return c;
}

TEST(RequestParser, BadParameterTable) {
  auto cases = bad_cases();
  ASSERT_GE(cases.size(), 100u);
  for (const auto& bc : cases) {
    ParsedRequest p;
    auto err = parse_request(chat_with(bc.field), Endpoint::kChat, limits(), p);
    ASSERT_TRUE(err) << bc.field;
    EXPECT_EQ(err->status, 400) << bc.field;
    EXPECT_NE(err->param.find(bc.param), std::string::npos) << bc.field << " -> " << err->param;
    auto j = nlohmann::json::parse(err->to_json());
    for (const char* k : {"message", "type", "param", "code"}) EXPECT_TRUE(j["error"].contains(k));
  }
}

TEST(RequestParser, BadMessagesAndPrompts) {
  const std::vector<std::pair<std::string, std::string>> chat = {
      {R"({})", "messages"},
      {R"({"messages":[]})", "messages"},
      {R"({"messages":"x"})", "messages"},
      {R"({"messages":[1]})", "messages[0]"},
      {R"({"messages":[{"content":"x"}]})", "messages[0].role"},
      {R"({"messages":[{"role":"wizard","content":"x"}]})", "messages[0].role"},
      {R"({"messages":[{"role":"user"}]})", "messages[0].content"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})",
       "messages[0].content[0].type"},
      {R"({"messages":[{"role":"user","content":5}]})", "messages[0].content"}};
  for (const auto& [body, param] : chat) {
    ParsedRequest p;
    auto err = parse_request(body, Endpoint::kChat, limits(), p);
    ASSERT_TRUE(err) << body;
    EXPECT_EQ(err->param, param) << body;
  }
  const std::vector<std::pair<std::string, std::string>> comp = {
      {R"({})", "prompt"},
      {R"({"prompt":5})", "prompt"},
      {R"({"prompt":[]})", "prompt"},
      {R"({"prompt":[1,-1]})", "prompt"},
      {R"({"prompt":[1,129280]})", "prompt"},
      {R"({"prompt":["a",1]})", "prompt"},
      {R"({"prompt":"a","logprobs":true})", "logprobs"},
      {R"({"prompt":"a","logprobs":21})", "logprobs"},
      {R"({"prompt":"a","echo":true,"stream":true})", "echo"},
      {R"({"prompt":"a","suffix":"b"})", "suffix"}};
  for (const auto& [body, param] : comp) {
    ParsedRequest p;
    auto err = parse_request(body, Endpoint::kCompletion, limits(), p);
    ASSERT_TRUE(err) << body;
    EXPECT_EQ(err->param, param) << body;
  }
  ParsedRequest p;
  auto err = parse_request("{not json", Endpoint::kChat, limits(), p);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->status, 400);
}

std::pair<std::string, std::string> run_reasoning(const std::vector<std::string>& pieces) {
  ReasoningParser r(true);
  std::string reasoning, content;
  for (const auto& p : pieces) {
    auto d = r.push(p);
    reasoning += d.reasoning;
    content += d.content;
  }
  auto d = r.finish();
  return {reasoning + d.reasoning, content + d.content};
}

TEST(ReasoningParser, SplitsAtCloseTag) {
  EXPECT_EQ(run_reasoning({"think hard</think>\n\nAnswer"}),
            std::make_pair(std::string("think hard"), std::string("\n\nAnswer")));
  EXPECT_EQ(run_reasoning({"<think>\nx</think>y"}),
            std::make_pair(std::string("\nx"), std::string("y")));
}

TEST(ReasoningParser, TagsSplitAcrossDeltas) {
  EXPECT_EQ(run_reasoning({"<th", "ink>a", "b</", "thi", "nk", ">c", "d"}),
            std::make_pair(std::string("ab"), std::string("cd")));
  // Every split point of the whole text gives the same answer.
  const std::string text = "<think>reason </ not a tag</think>content </think> again";
  for (size_t i = 0; i <= text.size(); ++i) {
    for (size_t j = i; j <= text.size(); j += 3) {
      auto r = run_reasoning({text.substr(0, i), text.substr(i, j - i), text.substr(j)});
      EXPECT_EQ(r.first, "reason </ not a tag");
      EXPECT_EQ(r.second, "content </think> again");
    }
  }
}

TEST(ReasoningParser, TruncatedIsAllReasoning) {
  EXPECT_EQ(run_reasoning({"still thinking </thi"}),
            std::make_pair(std::string("still thinking </thi"), std::string()));
  ReasoningParser off(false);
  EXPECT_EQ(off.push("a</think>b").content, "a</think>b");
}

TEST(ToolCallParser, ParsesCallsAllAtOnceAndStreamed) {
  const std::string text =
      "Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```"
      "json\n{\"city\": "
      "\"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```"
      "json\n{}\n```"
      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  for (size_t step : {text.size(), size_t(1), size_t(2), size_t(5), size_t(7)}) {
    ToolCallParser p;
    std::string content;
    std::vector<ToolCall> calls;
    for (size_t i = 0; i < text.size(); i += step) {
      auto d = p.push(text.substr(i, step));
      content += d.content;
      for (auto& c : d.calls) calls.push_back(c);
    }
    content += p.finish().content;
    EXPECT_EQ(content, "Sure.") << step;
    ASSERT_EQ(calls.size(), 2u) << step;
    EXPECT_EQ(calls[0].name, "get_weather");
    EXPECT_EQ(calls[0].arguments, "{\"city\": \"Paris\"}");
    EXPECT_EQ(calls[1].name, "get_time");
    EXPECT_EQ(calls[0].id.rfind("call_", 0), 0u);
    EXPECT_NE(calls[0].id, calls[1].id);
  }
}

TEST(ToolCallParser, V31FormAndUnfinished) {
  ToolCallParser p;
  auto d = p.push(
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{\"a\":1}<｜tool▁call▁end｜>");
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_EQ(d.calls[0].name, "f");
  EXPECT_EQ(d.calls[0].arguments, "{\"a\":1}");
  ToolCallParser q;
  EXPECT_EQ(q.push("plain <｜tool▁ca").content, "plain ");
  EXPECT_EQ(q.finish().content, "<｜tool▁ca");
}

TEST(Sse, FramingRoundTrip) {
  std::string stream =
      sse_data("{\"a\":1}") + sse_comment("keep-alive") + sse_data("{\"b\":2}") + sse_done();
  EXPECT_EQ(sse_data("x"), "data: x\n\n");
  for (size_t step = 1; step <= stream.size(); ++step) {
    SseParser p;
    std::vector<std::string> got;
    for (size_t i = 0; i < stream.size(); i += step) {
      for (auto& e : p.push(stream.substr(i, step))) got.push_back(e);
    }
    ASSERT_EQ(got.size(), 3u);
    EXPECT_EQ(got[0], "{\"a\":1}");
    EXPECT_EQ(got[2], "[DONE]");
  }
}

TEST(Metrics, ExpositionFormat) {
  Metrics m;
  m.on_http_response(200);
  m.on_http_response(200);
  m.on_http_response(429);
  m.on_request_finished(FinishLabel::kLength);
  m.add_tokens(10, 5);
  m.ttft.observe(0.003);
  m.ttft.observe(100);
  engine::EngineStats st;
  st.kv_blocks_total = 100;
  st.kv_blocks_used = 25;
  std::string t = m.render(&st, true, false);
  EXPECT_NE(t.find("r1serve_http_requests_total{status=\"200\"} 2\n"), std::string::npos);
  EXPECT_NE(t.find("r1serve_http_requests_total{status=\"429\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("r1serve_request_success_total{finished_reason=\"length\"} 1\n"),
            std::string::npos);
  EXPECT_NE(t.find("# TYPE r1serve_time_to_first_token_seconds histogram\n"), std::string::npos);
  EXPECT_NE(t.find("r1serve_time_to_first_token_seconds_bucket{le=\"0.005\"} 1\n"),
            std::string::npos);
  EXPECT_NE(t.find("r1serve_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"),
            std::string::npos);
  EXPECT_NE(t.find("r1serve_time_to_first_token_seconds_count 2\n"), std::string::npos);
  EXPECT_NE(t.find("r1serve_kv_cache_usage_perc 0.25\n"), std::string::npos);
  EXPECT_NE(t.find("r1serve_kv_cache_blocks_free 75\n"), std::string::npos);
  EXPECT_NE(t.find("r1serve_prompt_tokens_total 10\n"), std::string::npos);
  EXPECT_EQ(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  // Every sample line is NAME{labels} VALUE.
  for (size_t pos = 0; pos < t.size();) {
    size_t nl = t.find('\n', pos);
    std::string line = t.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty() || line[0] == '#') continue;
    EXPECT_EQ(line.rfind("r1serve_", 0), 0u) << line;
    EXPECT_NE(line.rfind(' '), std::string::npos) << line;
  }
}

TEST(Auth, ConstantTimeCompare) {
  EXPECT_TRUE(constant_time_equal("abc", "abc"));
  EXPECT_FALSE(constant_time_equal("abd", "abc"));
  EXPECT_FALSE(constant_time_equal("ab", "abc"));
  EXPECT_FALSE(constant_time_equal("", "abc"));
  EXPECT_FALSE(constant_time_equal("abcd", "abc"));
  // Timing: first-byte vs last-byte mismatch within noise (medians of 2e4 runs).
  std::string key(32, 'k');
  std::string a = key, b = key;
  a[0] = 'x';
  b[31] = 'x';
  auto median = [&](const std::string& s) {
    std::vector<double> v;
    for (int i = 0; i < 20000; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      bool r = constant_time_equal(s, key);
      auto t1 = std::chrono::steady_clock::now();
      EXPECT_FALSE(r);
      v.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
    }
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  EXPECT_LT(std::abs(median(a) - median(b)), 1000.0);
}

TEST(Auth, BearerParsing) {
  ApiKeys keys({"k1", "key-two"});
  EXPECT_EQ(keys.check("Bearer k1"), 0);
  EXPECT_EQ(keys.check("bearer key-two"), 1);
  EXPECT_FALSE(keys.check("Basic k1"));
  EXPECT_FALSE(keys.check("k1"));
  EXPECT_FALSE(keys.check("Bearer "));
  EXPECT_FALSE(keys.check("Bearer k"));
  EXPECT_FALSE(keys.check("Bearer k12"));
  EXPECT_FALSE(keys.check(""));
}

TEST(Auth, RouteTableIsDenyByDefault) {
  std::vector<std::string> public_paths;
  for (const auto& r : route_table()) {
    if (!route_needs_key(r, false)) public_paths.push_back(r.path);
    EXPECT_EQ(route_needs_key(r, false), !is_public_path(r.path, false)) << r.path;
  }
  // The checked-in allowlist.
  EXPECT_EQ(public_paths, (std::vector<std::string>{"/health", "/live", "/ready"}));
  EXPECT_FALSE(route_needs_key(*find_route("/metrics"), true));
  EXPECT_TRUE(route_needs_key(*find_route("/metrics"), false));
  EXPECT_EQ(find_route("/v1/models/x")->id, RouteId::kModel);
  EXPECT_EQ(find_route("/v1/chat/completionsx"), nullptr);
}

}  // namespace
}  // namespace r1::server
