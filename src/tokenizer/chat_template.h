// Chat templates: the Jinja template a model ships in tokenizer_config.json
// (or as a .jinja file), rendered the way transformers' apply_chat_template
// renders it with tokenize=False -- same variables (messages, tools,
// add_generation_prompt, the special tokens as strings, raise_exception,
// strftime_now) and same Jinja settings (trim_blocks, lstrip_blocks).
#pragma once

#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "tokenizer/jinja/template.h"

namespace r1::tok {

class ChatTemplate {
 public:
  // Loads the `chat_template` field of a tokenizer_config.json, given the
  // file or a model directory holding it (a chat_template.jinja next to it
  // takes precedence, as in transformers). The field may be a string or a
  // list of {"name", "template"}; special tokens may be strings or
  // AddedToken dicts.
  static Result<ChatTemplate> from_tokenizer_config(const std::string& path);
  static Result<ChatTemplate> from_config_json(const nlohmann::ordered_json& config,
                                               const std::string& where);
  // A bare template (e.g. --chat-template FILE). `special_tokens` maps names
  // such as "bos_token" to their text.
  static Result<ChatTemplate> from_file(const std::string& jinja_path,
                                        std::map<std::string, std::string> special_tokens = {});
  static Result<ChatTemplate> from_string(const std::string& source,
                                          std::map<std::string, std::string> special_tokens = {});

  // Renders a conversation. `messages` is an array of message objects (as in
  // the OpenAI API); `tools` is null or an array of tool definitions;
  // `extra` is an object of further template variables (e.g.
  // {"enable_thinking": false}). Key order of objects is kept, which matters
  // for tojson, so the inputs are ordered_json.
  Result<std::string> render(
      const nlohmann::ordered_json& messages, bool add_generation_prompt,
      const nlohmann::ordered_json& tools = nullptr,
      const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;

  // Replaces one special token (or adds one), e.g. when --chat-template is
  // combined with a tokenizer config.
  void set_special_token(const std::string& name, const std::string& text) {
    special_tokens_[name] = text;
  }
  const std::map<std::string, std::string>& special_tokens() const { return special_tokens_; }
  void set_limits(const jinja::RenderLimits& limits) { limits_ = limits; }
  // The template source that render() uses when no tools are given.
  const std::string& source() const;

 private:
  struct Named {
    std::string source;
    jinja::Template tmpl;
  };
  std::map<std::string, Named> templates_;  // "default", "tool_use", ...
  std::map<std::string, std::string> special_tokens_;
  nlohmann::ordered_json additional_special_tokens_ = nullptr;
  jinja::RenderLimits limits_;
};

// Reads the special tokens (bos_token, eos_token, ...) of a tokenizer config
// as transformers' special_tokens_map exposes them: text only, nulls left out.
std::map<std::string, std::string> special_tokens_from_config(const nlohmann::ordered_json& config);

}  // namespace r1::tok
