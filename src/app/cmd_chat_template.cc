// `r1serve chat-template`: renders conversations through a model's chat
// template, exactly as transformers' apply_chat_template(tokenize=False).
// With --jsonl each stdin line is {"messages": [...], "add_generation_prompt":
// bool, "tools": [...]?, "extra": {...}?} and each output line is the rendered
// text as a JSON string; without it, stdin is one such object and the text is
// printed raw.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include "app/command_registry.h"
#include "tokenizer/chat_template.h"

namespace r1::app {
namespace {

using ojson = nlohmann::ordered_json;

struct ChatTemplateArgs {
  std::string tokenizer_config;
  std::string chat_template_file;
  bool jsonl = false;
};

Result<std::string> render_request(const tok::ChatTemplate& tmpl, const std::string& text) {
  ojson req = ojson::parse(text, nullptr, false);
  if (req.is_discarded()) return make_error(ErrorCode::kInvalidArgument, "not valid JSON");
  if (!req.is_object()) return make_error(ErrorCode::kInvalidArgument, "expected a JSON object");
  if (!req.contains("messages") || !req["messages"].is_array()) {
    return make_error(ErrorCode::kInvalidArgument, "missing 'messages' array");
  }
  bool agp = false;
  if (req.contains("add_generation_prompt")) {
    if (!req["add_generation_prompt"].is_boolean()) {
      return make_error(ErrorCode::kInvalidArgument,
                        "'add_generation_prompt' must be true or false");
    }
    agp = req["add_generation_prompt"].get<bool>();
  }
  ojson tools = req.contains("tools") ? req["tools"] : ojson(nullptr);
  ojson extra = req.contains("extra") ? req["extra"] : ojson::object();
  return tmpl.render(req["messages"], agp, tools, extra);
}

int run(const ChatTemplateArgs& args) {
  if (args.tokenizer_config.empty() && args.chat_template_file.empty()) {
    std::fprintf(stderr,
                 "chat-template: give --tokenizer-config PATH and/or --chat-template FILE\n");
    return 2;
  }
  Result<tok::ChatTemplate> loaded = Status(ErrorCode::kInternal, "unset");
  if (!args.chat_template_file.empty()) {
    std::map<std::string, std::string> special;
    if (!args.tokenizer_config.empty()) {
      // The config is still the source of bos_token/eos_token.
      auto from_config = tok::ChatTemplate::from_tokenizer_config(args.tokenizer_config);
      if (from_config.is_ok()) special = from_config->special_tokens();
    }
    loaded = tok::ChatTemplate::from_file(args.chat_template_file, special);
  } else {
    loaded = tok::ChatTemplate::from_tokenizer_config(args.tokenizer_config);
  }
  if (!loaded.is_ok()) {
    std::fprintf(stderr, "chat-template: %s\n", loaded.status().to_string().c_str());
    return 1;
  }
  const tok::ChatTemplate& tmpl = loaded.value();
  if (!args.jsonl) {
    std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    auto out = render_request(tmpl, input);
    if (!out.is_ok()) {
      std::fprintf(stderr, "chat-template: %s\n", out.status().to_string().c_str());
      return 1;
    }
    std::fwrite(out->data(), 1, out->size(), stdout);
    return 0;
  }
  std::string line;
  size_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    auto out = render_request(tmpl, line);
    if (!out.is_ok()) {
      std::fflush(stdout);
      std::fprintf(stderr, "chat-template: stdin line %zu: %s\n", line_no,
                   out.status().to_string().c_str());
      return 1;
    }
    std::string encoded = ojson(out.value()).dump(-1, ' ', false, ojson::error_handler_t::replace);
    encoded.push_back('\n');
    std::fwrite(encoded.data(), 1, encoded.size(), stdout);
  }
  return 0;
}

void setup_chat_template(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ChatTemplateArgs>();
  auto* cmd =
      app.add_subcommand("chat-template", "Render conversations through a model's chat template");
  cmd->add_option("--tokenizer-config", args->tokenizer_config,
                  "tokenizer_config.json or a model directory");
  cmd->add_option("--chat-template", args->chat_template_file,
                  "a .jinja template file (overrides the config's)");
  cmd->add_flag("--jsonl", args->jsonl,
                "one JSON request per stdin line, one JSON string per output line");
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

const CommandRegistrar kRegistrar("chat-template", setup_chat_template);

}  // namespace
}  // namespace r1::app
