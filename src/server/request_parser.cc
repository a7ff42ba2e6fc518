// Validation of chat/completions request bodies (see request_parser.h).
#include "server/request_parser.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace r1::server {
namespace {

using Json = nlohmann::ordered_json;

struct Bad {
  ApiError err;
};

[[noreturn]] void fail(const std::string& param, const std::string& msg) {
  throw Bad{bad_param(param, msg)};
}

const char* type_name(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::string:
      return "string";
    case Json::value_t::array:
      return "array";
    case Json::value_t::object:
      return "object";
    case Json::value_t::number_float:
      return "number";
    default:
      return "integer";
  }
}

[[noreturn]] void wrong_type(const std::string& param, const char* want, const Json& v) {
  fail(param, fmt::format("'{}' must be {}, got {}", param, want, type_name(v)));
}

const Json* get(const Json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

bool get_bool(const Json& obj, const char* key, bool dflt) {
  const Json* v = get(obj, key);
  if (!v) return dflt;
  if (!v->is_boolean()) wrong_type(key, "a boolean", *v);
  return v->get<bool>();
}

double get_number(const Json& obj, const char* key, double dflt, double lo, double hi,
                  bool lo_open = false) {
  const Json* v = get(obj, key);
  if (!v) return dflt;
  if (!v->is_number()) wrong_type(key, "a number", *v);
  double d = v->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi || (lo_open && d == lo)) {
    fail(key, fmt::format("'{}' must be in {}{}, {}], got {}", key, lo_open ? "(" : "[", lo, hi,
                          v->dump()));
  }
  return d;
}

// Integers: a JSON integer (floats with no fraction such as 5.0 are refused,
// as OpenAI does), within [lo, hi].
int64_t as_int(const Json& v, const std::string& param, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) wrong_type(param, "an integer", v);
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi) || (lo > 0 && u < static_cast<uint64_t>(lo)))
      fail(param, fmt::format("'{}' must be in [{}, {}], got {}", param, lo, hi, u));
    return static_cast<int64_t>(u);
  }
  int64_t i = v.get<int64_t>();
  if (i < lo || i > hi)
    fail(param, fmt::format("'{}' must be in [{}, {}], got {}", param, lo, hi, i));
  return i;
}

std::optional<int64_t> get_int(const Json& obj, const char* key, int64_t lo, int64_t hi) {
  const Json* v = get(obj, key);
  if (!v) return std::nullopt;
  return as_int(*v, key, lo, hi);
}

std::string get_string(const Json& obj, const char* key, const std::string& dflt = "") {
  const Json* v = get(obj, key);
  if (!v) return dflt;
  if (!v->is_string()) wrong_type(key, "a string", *v);
  return v->get<std::string>();
}

std::vector<int32_t> token_array(const Json& arr, const std::string& param,
                                 const RequestLimits& lim) {
  std::vector<int32_t> ids;
  ids.reserve(arr.size());
  const int64_t hi = lim.vocab_size > 0 ? lim.vocab_size - 1 : std::numeric_limits<int32_t>::max();
  for (const auto& t : arr) ids.push_back(static_cast<int32_t>(as_int(t, param, 0, hi)));
  return ids;
}

// Content: a string, null, or an array of {"type": "text", "text": ...} parts
// (joined with "\n", as vLLM does for text parts).
Json flatten_content(const Json& c, const std::string& param) {
  if (c.is_null() || c.is_string()) return c;
  if (!c.is_array()) wrong_type(param, "a string or an array of content parts", c);
  std::string text;
  bool first = true;
  for (size_t i = 0; i < c.size(); ++i) {
    const Json& part = c[i];
    std::string p = fmt::format("{}[{}]", param, i);
    if (!part.is_object()) wrong_type(p, "an object", part);
    std::string type = get_string(part, "type");
    if (type != "text") {
      fail(p + ".type", fmt::format("content part type '{}' is not supported (only 'text')", type));
    }
    const Json* t = get(part, "text");
    if (!t || !t->is_string()) fail(p + ".text", "a text content part needs a string 'text'");
    if (!first) text += "\n";
    text += t->get<std::string>();
    first = false;
  }
  return text;
}

bool valid_function_name(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char ch : n) {
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.'))
      return false;
  }
  return true;
}

void parse_messages(const Json& body, const RequestLimits& lim, ParsedRequest& out) {
  const Json* msgs = get(body, "messages");
  if (!msgs) fail("messages", "'messages' is required");
  if (!msgs->is_array()) wrong_type("messages", "an array", *msgs);
  if (msgs->empty()) fail("messages", "'messages' must not be empty");
  if (static_cast<int64_t>(msgs->size()) > lim.max_messages) {
    fail("messages", fmt::format("at most {} messages are allowed", lim.max_messages));
  }
  Json clean = Json::array();
  for (size_t i = 0; i < msgs->size(); ++i) {
    const Json& m = (*msgs)[i];
    std::string p = fmt::format("messages[{}]", i);
    if (!m.is_object()) wrong_type(p, "an object", m);
    auto rit = m.find("role");
    if (rit == m.end() || !rit->is_string())
      fail(p + ".role", "each message needs a string 'role'");
    std::string role = rit->get<std::string>();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      fail(p + ".role", fmt::format("unknown role '{}'", role));
    }
    Json cm = Json::object();
    cm["role"] = role;
    auto cit = m.find("content");
    Json content = cit == m.end() ? Json(nullptr) : flatten_content(*cit, p + ".content");
    if (role == "assistant") {
      // Earlier turns go back without their reasoning: drop the separate
      // fields and anything up to the last </think> in the content.
      if (content.is_string()) {
        std::string s = content.get<std::string>();
        size_t pos = s.rfind("</think>");
        if (pos != std::string::npos) content = s.substr(pos + 8);
      }
      auto tc = m.find("tool_calls");
      if (tc != m.end() && !tc->is_null()) {
        if (!tc->is_array()) wrong_type(p + ".tool_calls", "an array", *tc);
        Json calls = Json::array();
        for (size_t k = 0; k < tc->size(); ++k) {
          const Json& c = (*tc)[k];
          std::string cp = fmt::format("{}.tool_calls[{}]", p, k);
          if (!c.is_object()) wrong_type(cp, "an object", c);
          const Json* fn = get(c, "function");
          if (!fn || !fn->is_object())
            fail(cp + ".function", "a tool call needs a 'function' object");
          std::string name = get_string(*fn, "name");
          if (name.empty()) fail(cp + ".function.name", "a tool call needs a function name");
          Json args = fn->contains("arguments") ? (*fn)["arguments"] : Json("{}");
          if (!args.is_string()) args = args.dump();
          Json call;
          call["id"] = get_string(c, "id");
          call["type"] = "function";
          call["function"] = Json{{"name", name}, {"arguments", args}};
          calls.push_back(std::move(call));
        }
        if (!calls.empty()) {
          cm["content"] =
              content.is_string() && !content.get<std::string>().empty() ? content : Json(nullptr);
          cm["tool_calls"] = std::move(calls);
          clean.push_back(std::move(cm));
          continue;
        }
      }
      if (content.is_null()) content = "";
    } else if (content.is_null()) {
      fail(p + ".content", fmt::format("a '{}' message needs 'content'", role));
    }
    cm["content"] = content;
    if (role == "tool") {
      auto id = m.find("tool_call_id");
      if (id != m.end() && id->is_string()) cm["tool_call_id"] = *id;
    }
    clean.push_back(std::move(cm));
  }
  out.messages = std::move(clean);
}

void parse_tools(const Json& body, const RequestLimits& lim, ParsedRequest& out) {
  const Json* tools = get(body, "tools");
  if (tools) {
    if (!tools->is_array()) wrong_type("tools", "an array", *tools);
    if (static_cast<int64_t>(tools->size()) > lim.max_tools) {
      fail("tools", fmt::format("at most {} tools are allowed", lim.max_tools));
    }
    for (size_t i = 0; i < tools->size(); ++i) {
      const Json& t = (*tools)[i];
      std::string p = fmt::format("tools[{}]", i);
      if (!t.is_object()) wrong_type(p, "an object", t);
      if (get_string(t, "type", "function") != "function")
        fail(p + ".type", "only 'function' tools are supported");
      const Json* fn = get(t, "function");
      if (!fn || !fn->is_object()) fail(p + ".function", "a tool needs a 'function' object");
      auto nit = fn->find("name");
      if (nit == fn->end() || !nit->is_string() || !valid_function_name(nit->get<std::string>())) {
        fail(p + ".function.name",
             "function names are 1-64 characters of a-z, A-Z, 0-9, '_', '-', '.'");
      }
      auto pit = fn->find("parameters");
      if (pit != fn->end() && !pit->is_null() && !pit->is_object()) {
        wrong_type(p + ".function.parameters", "an object", *pit);
      }
      auto dit = fn->find("description");
      if (dit != fn->end() && !dit->is_null() && !dit->is_string()) {
        wrong_type(p + ".function.description", "a string", *dit);
      }
    }
    if (!tools->empty()) out.tools = *tools;
  }
  const Json* tc = get(body, "tool_choice");
  if (tc) {
    if (tc->is_string()) {
      std::string s = tc->get<std::string>();
      if (s != "auto" && s != "none" && s != "required") {
        fail("tool_choice",
             "'tool_choice' must be 'none', 'auto', 'required' or a function object");
      }
      out.tool_choice = s;
    } else if (tc->is_object()) {
      const Json* fn = get(*tc, "function");
      if (!fn || !fn->is_object() || !fn->contains("name") || !(*fn)["name"].is_string()) {
        fail("tool_choice", "'tool_choice' object needs function.name");
      }
      out.tool_choice = "function";
      out.tool_choice_name = (*fn)["name"].get<std::string>();
    } else {
      wrong_type("tool_choice", "a string or an object", *tc);
    }
    if (out.tool_choice != "none" && out.tool_choice != "auto" && out.tools.is_null()) {
      fail("tool_choice", "'tool_choice' needs 'tools'");
    }
    if (out.tool_choice == "function") {
      bool found = false;
      for (const auto& t : out.tools) found |= t["function"]["name"] == out.tool_choice_name;
      if (!found)
        fail("tool_choice", fmt::format("tool '{}' is not in 'tools'", out.tool_choice_name));
    }
  }
  if (out.tool_choice == "none") out.tools = nullptr;
}

void parse_prompt(const Json& body, const RequestLimits& lim, ParsedRequest& out) {
  const Json* p = get(body, "prompt");
  if (!p) fail("prompt", "'prompt' is required");
  if (p->is_string()) {
    out.prompt_texts.push_back(p->get<std::string>());
  } else if (p->is_array()) {
    if (p->empty()) fail("prompt", "'prompt' must not be empty");
    if ((*p)[0].is_number()) {
      out.prompt_ids.push_back(token_array(*p, "prompt", lim));
    } else {
      if (static_cast<int64_t>(p->size()) > lim.max_prompts) {
        fail("prompt", fmt::format("at most {} prompts per request", lim.max_prompts));
      }
      bool strings = (*p)[0].is_string();
      for (const auto& e : *p) {
        if (strings) {
          if (!e.is_string())
            wrong_type("prompt", "a string, an array of strings or token arrays", e);
          out.prompt_texts.push_back(e.get<std::string>());
        } else {
          if (!e.is_array() || e.empty()) wrong_type("prompt", "a non-empty token array", e);
          out.prompt_ids.push_back(token_array(e, "prompt", lim));
        }
      }
    }
  } else {
    wrong_type("prompt", "a string, an array of strings or token arrays", *p);
  }
}

void parse_stop(const Json& body, const RequestLimits& lim, engine::SamplingParams& sp) {
  const Json* s = get(body, "stop");
  if (!s) return;
  auto add = [&](const Json& v) {
    if (!v.is_string()) wrong_type("stop", "a string or an array of strings", v);
    std::string str = v.get<std::string>();
    if (str.empty()) fail("stop", "stop strings must not be empty");
    if (static_cast<int64_t>(str.size()) > lim.max_stop_bytes) {
      fail("stop", fmt::format("stop strings are at most {} bytes", lim.max_stop_bytes));
    }
    sp.stop.push_back(std::move(str));
  };
  if (s->is_array()) {
    if (static_cast<int64_t>(s->size()) > lim.max_stop) {
      fail("stop", fmt::format("at most {} stop sequences are allowed", lim.max_stop));
    }
    for (const auto& v : *s) add(v);
  } else {
    add(*s);
  }
  const Json* ids = get(body, "stop_token_ids");
  if (ids) {
    if (!ids->is_array()) wrong_type("stop_token_ids", "an array", *ids);
    if (ids->size() > 64) fail("stop_token_ids", "at most 64 stop token ids");
    sp.stop_token_ids = token_array(*ids, "stop_token_ids", lim);
  }
}

void parse_logit_bias(const Json& body, const RequestLimits& lim, engine::SamplingParams& sp) {
  const Json* lb = get(body, "logit_bias");
  if (!lb) return;
  if (!lb->is_object()) wrong_type("logit_bias", "an object mapping token ids to biases", *lb);
  if (static_cast<int64_t>(lb->size()) > lim.max_logit_bias) {
    fail("logit_bias",
         fmt::format("at most {} logit_bias entries are allowed", lim.max_logit_bias));
  }
  for (auto it = lb->begin(); it != lb->end(); ++it) {
    const std::string& key = it.key();
    char* end = nullptr;
    errno = 0;
    long long id = key.empty() ? -1 : std::strtoll(key.c_str(), &end, 10);
    if (key.empty() || errno != 0 || *end != '\0' || id < 0 ||
        id > std::numeric_limits<int32_t>::max() || (lim.vocab_size > 0 && id >= lim.vocab_size)) {
      fail("logit_bias",
           fmt::format("logit_bias key '{}' is not a token id in [0, {})", key, lim.vocab_size));
    }
    if (!it->is_number()) wrong_type("logit_bias", "an object of numbers", *it);
    double b = it->get<double>();
    if (!std::isfinite(b) || b < -100 || b > 100)
      fail("logit_bias", "logit_bias values must be in [-100, 100]");
    sp.logit_bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(b));
  }
}

void parse_common(const Json& body, Endpoint ep, const RequestLimits& lim, ParsedRequest& out) {
  engine::SamplingParams& sp = out.params;
  out.model = get_string(body, "model");
  out.user = get_string(body, "user");
  if (out.user.size() > 1024) fail("user", "'user' is at most 1024 characters");
  out.stream = get_bool(body, "stream", false);
  const Json* so = get(body, "stream_options");
  if (so) {
    if (!so->is_object()) wrong_type("stream_options", "an object", *so);
    if (!out.stream)
      fail("stream_options", "'stream_options' is only allowed when 'stream' is true");
    out.include_usage = get_bool(*so, "include_usage", false);
  }
  const char* mt_key = "max_tokens";
  const int64_t mt_hi =
      lim.max_tokens > 0 ? std::min(lim.max_tokens, lim.max_model_len) : lim.max_model_len;
  std::optional<int64_t> mt = get_int(body, "max_tokens", 1, mt_hi);
  if (ep == Endpoint::kChat) {
    auto mct = get_int(body, "max_completion_tokens", 1, mt_hi);
    if (mct) {
      mt = mct;
      mt_key = "max_completion_tokens";
    }
  }
  (void)mt_key;
  if (mt) out.max_tokens = static_cast<int32_t>(*mt);
  sp.temperature = static_cast<float>(get_number(body, "temperature", 1.0, 0.0, 2.0));
  sp.top_p = static_cast<float>(get_number(body, "top_p", 1.0, 0.0, 1.0, /*lo_open=*/true));
  sp.top_k = static_cast<int32_t>(get_int(body, "top_k", -1, 1 << 20).value_or(0));
  sp.min_p = static_cast<float>(get_number(body, "min_p", 0.0, 0.0, 1.0));
  sp.presence_penalty = static_cast<float>(get_number(body, "presence_penalty", 0.0, -2.0, 2.0));
  sp.frequency_penalty = static_cast<float>(get_number(body, "frequency_penalty", 0.0, -2.0, 2.0));
  sp.repetition_penalty =
      static_cast<float>(get_number(body, "repetition_penalty", 1.0, 0.0, 2.0, true));
  if (const Json* seed = get(body, "seed")) {
    if (!seed->is_number_integer()) wrong_type("seed", "an integer", *seed);
    sp.seed = seed->is_number_unsigned() ? seed->get<uint64_t>()
                                         : static_cast<uint64_t>(seed->get<int64_t>());
  }
  sp.n = static_cast<int32_t>(get_int(body, "n", 1, lim.max_n).value_or(1));
  if (auto bo = get_int(body, "best_of", 1, lim.max_n)) {
    if (*bo != sp.n) fail("best_of", "'best_of' different from 'n' is not supported");
  }
  if (out.stream && sp.n > 1 && ep == Endpoint::kCompletion && get(body, "best_of")) {
    // best_of == n is fine for streams too.
  }
  parse_stop(body, lim, sp);
  parse_logit_bias(body, lim, sp);
  sp.ignore_eos = get_bool(body, "ignore_eos", false);
  sp.skip_special_tokens = get_bool(body, "skip_special_tokens", true);
  sp.min_tokens =
      static_cast<int32_t>(get_int(body, "min_tokens", 0, lim.max_model_len).value_or(0));
  if (out.max_tokens && sp.min_tokens > *out.max_tokens) {
    fail("min_tokens", "'min_tokens' must not exceed 'max_tokens'");
  }
  if (const Json* rf = get(body, "response_format")) {
    if (!rf->is_object()) wrong_type("response_format", "an object", *rf);
    if (get_string(*rf, "type", "text") != "text") {
      fail("response_format", "only response_format type 'text' is supported");
    }
  }
  (void)get_bool(body, "parallel_tool_calls", true);
  if (get(body, "suffix")) fail("suffix", "'suffix' is not supported");
}

}  // namespace

std::optional<ApiError> parse_request(std::string_view text, Endpoint ep, const RequestLimits& lim,
                                      ParsedRequest& out) {
  Json body = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    return ApiError{400, "the request body is not valid JSON", "invalid_request_error", "",
                    "invalid_json"};
  }
  if (!body.is_object()) {
    return ApiError{400, "the request body must be a JSON object", "invalid_request_error", "",
                    "invalid_json"};
  }
  out = ParsedRequest{};
  out.endpoint = ep;
  try {
    parse_common(body, ep, lim, out);
    if (ep == Endpoint::kChat) {
      out.logprobs = get_bool(body, "logprobs", false);
      auto tl = get_int(body, "top_logprobs", 0, lim.max_top_logprobs);
      if (tl && !out.logprobs) fail("top_logprobs", "'top_logprobs' needs 'logprobs': true");
      out.params.logprobs = out.logprobs ? static_cast<int32_t>(tl.value_or(0)) : -1;
      parse_messages(body, lim, out);
      parse_tools(body, lim, out);
      out.add_generation_prompt = get_bool(body, "add_generation_prompt", true);
      out.include_reasoning = get_bool(body, "include_reasoning", true);
      std::string effort = get_string(body, "reasoning_effort");
      if (!effort.empty() && effort != "low" && effort != "medium" && effort != "high" &&
          effort != "minimal" && effort != "none") {
        fail("reasoning_effort",
             "'reasoning_effort' must be one of none, minimal, low, medium, high");
      }
      if (const Json* r = get(body, "reasoning")) {  // OpenRouter style {"exclude": true}
        if (!r->is_object()) wrong_type("reasoning", "an object", *r);
        if (get_bool(*r, "exclude", false)) out.include_reasoning = false;
      }
      if (const Json* kw = get(body, "chat_template_kwargs")) {
        if (!kw->is_object()) wrong_type("chat_template_kwargs", "an object", *kw);
        for (auto it = kw->begin(); it != kw->end(); ++it) {
          // Never let a request replace what the server passes itself.
          if (it.key() == "messages" || it.key() == "tools" ||
              it.key() == "add_generation_prompt" || it.key().find("token") != std::string::npos) {
            fail("chat_template_kwargs",
                 fmt::format("'{}' cannot be set through chat_template_kwargs", it.key()));
          }
          out.template_kwargs[it.key()] = *it;
        }
      }
    } else {
      if (const Json* lp = get(body, "logprobs")) {
        if (lp->is_boolean()) wrong_type("logprobs", "an integer", *lp);
        out.params.logprobs =
            static_cast<int32_t>(as_int(*lp, "logprobs", 0, lim.max_top_logprobs));
        out.logprobs = true;
      }
      out.echo = get_bool(body, "echo", false);
      parse_prompt(body, lim, out);
      if (out.stream && out.echo) fail("echo", "'echo' is not supported with 'stream'");
    }
  } catch (const Bad& b) {
    return b.err;
  } catch (const nlohmann::json::exception& e) {
    return ApiError{400, std::string("malformed request: ") + e.what(), "invalid_request_error", "",
                    ""};
  }
  return std::nullopt;
}

}  // namespace r1::server
