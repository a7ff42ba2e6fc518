// `r1serve tokenize`: text on stdin -> token ids as JSON on stdout. With
// --jsonl each input line is a JSON string and each output line its ids.
// Bad input (not JSON, not a string) is reported with its line number; exit 1.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "app/command_registry.h"
#include "tokenizer/tokenizer.h"

namespace r1::app {
namespace {

struct TokenizeOptions {
  std::string tokenizer;
  bool jsonl = false;
  bool add_special_tokens = false;
};

std::string ids_json(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  s += ']';
  return s;
}

int run_tokenize(const TokenizeOptions& opt) {
  auto loaded = tok::Tokenizer::load(opt.tokenizer);
  if (!loaded) {
    std::fprintf(stderr, "r1serve tokenize: %s\n", loaded.status().to_string().c_str());
    return 1;
  }
  const auto& tokenizer = *loaded.value();
  if (!opt.jsonl) {
    std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    std::string out = ids_json(tokenizer.encode(text, opt.add_special_tokens));
    std::printf("%s\n", out.c_str());
    return 0;
  }
  std::string line;
  size_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      std::fprintf(stderr, "r1serve tokenize: stdin line %zu is not valid JSON: %s\n", line_no,
                   e.what());
      return 1;
    }
    if (!j.is_string()) {
      std::fprintf(stderr, "r1serve tokenize: stdin line %zu: expected a JSON string, got %s\n",
                   line_no, j.type_name());
      return 1;
    }
    std::string out = ids_json(tokenizer.encode(j.get<std::string>(), opt.add_special_tokens));
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fputc('\n', stdout);
  }
  return 0;
}

void setup_tokenize(CLI::App& app, int& exit_code) {
  auto opt = std::make_shared<TokenizeOptions>();
  auto* cmd = app.add_subcommand("tokenize", "Encode text from stdin to token ids (JSON)");
  cmd->add_option("--tokenizer", opt->tokenizer, "tokenizer.json or a model directory")->required();
  cmd->add_flag("--jsonl", opt->jsonl, "Each stdin line is a JSON string; one ids array per line");
  cmd->add_flag("--add-special-tokens", opt->add_special_tokens,
                "Add BOS/EOS as the tokenizer config says");
  cmd->callback([opt, &exit_code] { exit_code = run_tokenize(*opt); });
}

const CommandRegistrar kRegistrar("tokenize", setup_tokenize);

}  // namespace
}  // namespace r1::app
