// `r1serve generate --model DIR (--prompt TEXT | --tokens 1,2,3)`: one
// request through the engine; prints the generated text as it streams (or,
// with --ids, only a JSON array of the generated token ids). Sampling
// defaults come from generation_config.json when present.
#include <cstdio>
#include <fstream>
#include <future>

#include <nlohmann/json.hpp>

#include "app/command_registry.h"
#include "app/model_args.h"
#include "app/token_list.h"
#include "engine/engine.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace r1::app {
namespace {

struct GenerateArgs {
  ModelArgs model;
  std::string prompt;
  std::string tokens;
  int max_tokens = 256;
  std::optional<float> temperature;
  std::optional<float> top_p;
  int top_k = 0;
  bool ignore_eos = false;
  bool chat = false;
  bool ids = false;
};

int fail(const std::string& msg) {
  std::fprintf(stderr, "r1serve generate: %s\n", msg.c_str());
  return 1;
}

int run_generate(const GenerateArgs& a) {
  if (a.prompt.empty() == a.tokens.empty())
    return fail("give exactly one of --prompt and --tokens");
  auto loaded = load_model(a.model);
  if (!loaded.is_ok()) return fail(loaded.status().message());
  std::shared_ptr<backend::Backend> backend = std::move(loaded->backend);
  std::shared_ptr<model::Model> model(loaded->model.release(),
                                      [backend](model::Model* m) { delete m; });

  std::shared_ptr<const tok::Tokenizer> tokenizer;
  if (auto t = tok::Tokenizer::load(a.model.model_dir); t.is_ok()) {
    tokenizer = *t;
  } else if (!a.prompt.empty() || !a.ids) {
    return fail("the model's tokenizer: " + t.status().message());
  }

  engine::GenerationRequest req;
  req.request_id = "generate";
  if (!a.tokens.empty()) {
    auto ids = parse_token_list(a.tokens, model->config().vocab_size);
    if (!ids.is_ok()) return fail(ids.status().message());
    req.prompt = *ids;
  } else {
    std::string text = a.prompt;
    bool special = true;
    if (a.chat) {
      auto tmpl = tok::ChatTemplate::from_tokenizer_config(a.model.model_dir);
      if (!tmpl.is_ok()) return fail("chat template: " + tmpl.status().message());
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      messages.push_back({{"role", "user"}, {"content", a.prompt}});
      auto rendered = tmpl->render(messages, /*add_generation_prompt=*/true);
      if (!rendered.is_ok()) return fail("chat template: " + rendered.status().message());
      text = *rendered;
      special = false;  // the template already wrote BOS
    }
    req.prompt = tokenizer->encode(text, special);
  }

  // Defaults: generation_config.json, then the command line.
  engine::SamplingParams& p = req.params;
  p.temperature = 1.0f;
  std::ifstream gc(a.model.model_dir + "/generation_config.json");
  if (gc.good()) {
    auto j = nlohmann::json::parse(gc, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) {
      if (j.contains("temperature") && j["temperature"].is_number())
        p.temperature = j["temperature"].get<float>();
      if (j.contains("top_p") && j["top_p"].is_number()) p.top_p = j["top_p"].get<float>();
      if (j.contains("top_k") && j["top_k"].is_number_integer())
        p.top_k = j["top_k"].get<int32_t>();
      if (j.contains("do_sample") && j["do_sample"].is_boolean() && !j["do_sample"].get<bool>())
        p.temperature = 0;
    }
  }
  if (a.temperature) p.temperature = *a.temperature;
  if (a.top_p) p.top_p = *a.top_p;
  if (a.top_k != 0) p.top_k = a.top_k;
  p.seed = a.model.seed;  // --seed seeds sampling (and dummy weights)
  p.max_tokens = a.max_tokens;
  p.ignore_eos = a.ignore_eos;

  engine::EngineConfig cfg;
  const int64_t need = static_cast<int64_t>(req.prompt.size()) + a.max_tokens;
  cfg.num_kv_blocks = (need + cfg.block_size - 1) / cfg.block_size + 1;
  auto eng = engine::make_engine(model, tokenizer, cfg);
  if (!eng.is_ok()) return fail(eng.status().message());

  std::promise<engine::EngineEvent> last;
  std::vector<int32_t> out_ids;
  const bool print_text = !a.ids;
  Status st = (*eng)->submit(std::move(req), [&](const engine::EngineEvent& ev) {
    out_ids.insert(out_ids.end(), ev.token_ids.begin(), ev.token_ids.end());
    if (print_text && !ev.text.empty()) {
      std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
      std::fflush(stdout);
    }
    if (ev.request_done) last.set_value(ev);
  });
  if (!st.is_ok()) return fail(st.message());
  engine::EngineEvent end = last.get_future().get();
  (*eng)->shutdown();
  if (end.finish == engine::FinishReason::kError) return fail(end.error.message());
  if (a.ids) {
    std::printf("%s\n", nlohmann::json(out_ids).dump().c_str());
  } else {
    std::printf("\n");
  }
  return 0;
}

void setup_generate(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<GenerateArgs>();
  auto* cmd =
      app.add_subcommand("generate", "Generate a continuation of one prompt through the engine");
  args->model.add_to(cmd);
  cmd->add_option("--prompt", args->prompt, "Prompt text (tokenized with the model's tokenizer)");
  cmd->add_option("--tokens", args->tokens, "Prompt as comma-separated token ids, e.g. 5,17,300");
  cmd->add_option("--max-tokens", args->max_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", args->temperature,
                  "Sampling temperature (0: greedy; default from generation_config.json, else 1)");
  cmd->add_option("--top-p", args->top_p,
                  "Nucleus sampling mass (default from generation_config.json, else 1)");
  cmd->add_option("--top-k", args->top_k, "Keep the k most likely tokens (0: off)");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "Keep generating past the end-of-sequence token");
  cmd->add_flag("--chat", args->chat,
                "Render the prompt as a user message through the model's chat template");
  cmd->add_flag("--ids", args->ids, "Print only a JSON array of the generated token ids");
  cmd->callback([args, &exit_code] { exit_code = run_generate(*args); });
}

const CommandRegistrar kRegistrar("generate", setup_generate);

}  // namespace
}  // namespace r1::app
