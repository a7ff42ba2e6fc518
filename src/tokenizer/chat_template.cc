// ChatTemplate: loading templates from tokenizer configs and files, and
// rendering with the variables transformers passes to the template.
#include "tokenizer/chat_template.h"

#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace r1::tok {
namespace {

namespace fs = std::filesystem;
using jinja::Value;

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kNotFound, "cannot open '{}'", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return make_error(ErrorCode::kIo, "cannot read '{}'", path);
  return ss.str();
}

// transformers' strftime_now(format): the local time, formatted.
Value strftime_now_fn() {
  return Value::callable("strftime_now", [](jinja::Interpreter& in, jinja::CallArgs& a) -> Value {
    if (a.positional.empty() || !a.positional[0].is_string())
      in.fail("strftime_now needs a format string");
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[256];
    size_t n = std::strftime(buf, sizeof(buf), a.positional[0].as_string().c_str(), &tm);
    return Value(std::string(buf, n));
  });
}

}  // namespace

std::map<std::string, std::string> special_tokens_from_config(
    const nlohmann::ordered_json& config) {
  std::map<std::string, std::string> out;
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                          "cls_token", "mask_token"}) {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) continue;
    if (it->is_string())
      out[key] = it->get<std::string>();
    else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      out[key] = (*it)["content"].get<std::string>();
    }
  }
  return out;
}

Result<ChatTemplate> ChatTemplate::from_string(const std::string& source,
                                               std::map<std::string, std::string> special_tokens) {
  auto t = jinja::Template::parse(source);
  if (!t.is_ok()) return t.status();
  ChatTemplate ct;
  ct.templates_.emplace("default", Named{source, std::move(t).value()});
  ct.special_tokens_ = std::move(special_tokens);
  return ct;
}

Result<ChatTemplate> ChatTemplate::from_file(const std::string& jinja_path,
                                             std::map<std::string, std::string> special_tokens) {
  R1_ASSIGN_OR_RETURN(std::string source, read_file(jinja_path));
  auto ct = from_string(source, std::move(special_tokens));
  if (!ct.is_ok())
    return Status(ct.status().code(), fmt::format("{}: {}", jinja_path, ct.status().message()));
  return ct;
}

Result<ChatTemplate> ChatTemplate::from_config_json(const nlohmann::ordered_json& config,
                                                    const std::string& where) {
  if (!config.is_object())
    return make_error(ErrorCode::kInvalidArgument, "{}: expected a JSON object", where);
  auto field = config.find("chat_template");
  if (field == config.end() || field->is_null()) {
    return make_error(ErrorCode::kNotFound, "{}: no 'chat_template' field", where);
  }
  ChatTemplate ct;
  auto add = [&](const std::string& name, const std::string& source) -> Status {
    auto t = jinja::Template::parse(source);
    if (!t.is_ok()) {
      return make_error(t.status().code(), "{}: chat_template '{}': {}", where, name,
                        t.status().message());
    }
    ct.templates_.emplace(name, Named{source, std::move(t).value()});
    return Status::ok();
  };
  if (field->is_string()) {
    R1_RETURN_IF_ERROR(add("default", field->get<std::string>()));
  } else if (field->is_array()) {
    for (const auto& entry : *field) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
          !entry["name"].is_string() || !entry["template"].is_string()) {
        return make_error(ErrorCode::kInvalidArgument,
                          "{}: chat_template list entries must be {{name, template}}", where);
      }
      R1_RETURN_IF_ERROR(
          add(entry["name"].get<std::string>(), entry["template"].get<std::string>()));
    }
  } else {
    return make_error(ErrorCode::kInvalidArgument, "{}: 'chat_template' must be a string or a list",
                      where);
  }
  ct.special_tokens_ = special_tokens_from_config(config);
  if (auto it = config.find("additional_special_tokens"); it != config.end() && it->is_array()) {
    ct.additional_special_tokens_ = nlohmann::ordered_json::array();
    for (const auto& t : *it) {
      if (t.is_string())
        ct.additional_special_tokens_.push_back(t);
      else if (t.is_object() && t.contains("content"))
        ct.additional_special_tokens_.push_back(t["content"]);
    }
  }
  return ct;
}

Result<ChatTemplate> ChatTemplate::from_tokenizer_config(const std::string& path) {
  std::error_code ec;
  std::string config_path = path;
  std::string jinja_override;
  if (fs::is_directory(path, ec)) {
    config_path = (fs::path(path) / "tokenizer_config.json").string();
    fs::path j = fs::path(path) / "chat_template.jinja";
    if (fs::exists(j, ec)) jinja_override = j.string();
  }
  R1_ASSIGN_OR_RETURN(std::string text, read_file(config_path));
  nlohmann::ordered_json config = nlohmann::ordered_json::parse(text, nullptr, false);
  if (config.is_discarded())
    return make_error(ErrorCode::kInvalidArgument, "{}: not valid JSON", config_path);
  if (!jinja_override.empty()) return from_file(jinja_override, special_tokens_from_config(config));
  return from_config_json(config, config_path);
}

const std::string& ChatTemplate::source() const {
  static const std::string kEmpty;
  auto it = templates_.find("default");
  if (it != templates_.end()) return it->second.source;
  return templates_.empty() ? kEmpty : templates_.begin()->second.source;
}

Result<std::string> ChatTemplate::render(const nlohmann::ordered_json& messages,
                                         bool add_generation_prompt,
                                         const nlohmann::ordered_json& tools,
                                         const nlohmann::ordered_json& extra) const {
  if (!messages.is_array())
    return make_error(ErrorCode::kInvalidArgument, "messages must be an array");
  if (!tools.is_null() && !tools.is_array())
    return make_error(ErrorCode::kInvalidArgument, "tools must be an array or null");
  if (!extra.is_null() && !extra.is_object())
    return make_error(ErrorCode::kInvalidArgument, "extra must be an object");
  // transformers picks "tool_use" when tools are given and it exists, else "default".
  const Named* chosen = nullptr;
  if (!tools.is_null()) {
    if (auto it = templates_.find("tool_use"); it != templates_.end()) chosen = &it->second;
  }
  if (!chosen) {
    auto it = templates_.find("default");
    if (it == templates_.end()) {
      if (templates_.size() != 1)
        return make_error(ErrorCode::kInvalidArgument, "no 'default' chat template to use");
      it = templates_.begin();
    }
    chosen = &it->second;
  }
  std::vector<std::pair<std::string, Value>> vars;
  for (const auto& [name, text] : special_tokens_) vars.emplace_back(name, Value(text));
  if (!additional_special_tokens_.is_null())
    vars.emplace_back("additional_special_tokens", jinja::from_json(additional_special_tokens_));
  vars.emplace_back(
      "raise_exception",
      Value::callable("raise_exception", [](jinja::Interpreter& in, jinja::CallArgs& a) -> Value {
        in.fail("raise_exception: " +
                (a.positional.empty() ? std::string() : jinja::to_py_str(a.positional[0])));
      }));
  vars.emplace_back("strftime_now", strftime_now_fn());
  if (extra.is_object()) {
    for (auto it = extra.begin(); it != extra.end(); ++it)
      vars.emplace_back(it.key(), jinja::from_json(it.value()));
  }
  vars.emplace_back("messages", jinja::from_json(messages));
  vars.emplace_back("tools", tools.is_null() ? Value::none() : jinja::from_json(tools));
  vars.emplace_back("documents", Value::none());
  vars.emplace_back("add_generation_prompt", Value(add_generation_prompt));
  return chosen->tmpl.render(std::move(vars), limits_);
}

}  // namespace r1::tok
