// `r1serve logits --model DIR --tokens 5,17,300 --out FILE.npy`: the logits at
// every position of one sequence, as little-endian float32 [n, vocab]. Prints
// nothing on stdout; errors go to stderr with exit code 1.
#include <cstdio>

#include "app/command_registry.h"
#include "app/model_args.h"
#include "app/token_list.h"
#include "core/npy.h"
#include "model/single_sequence.h"

namespace r1::app {
namespace {

struct LogitsArgs {
  ModelArgs model;
  std::string tokens;
  std::string out;
};

int run_logits(const LogitsArgs& a) {
  auto loaded = load_model(a.model);
  if (!loaded.is_ok()) {
    std::fprintf(stderr, "r1serve logits: %s\n", loaded.status().message().c_str());
    return 1;
  }
  model::Model& m = *loaded->model;
  auto tokens = parse_token_list(a.tokens, m.config().vocab_size);
  if (!tokens.is_ok()) {
    std::fprintf(stderr, "r1serve logits: %s\n", tokens.status().message().c_str());
    return 1;
  }
  const int64_t n = static_cast<int64_t>(tokens->size());
  model::SingleSequence seq(m, n);
  std::vector<float> logits = seq.append(*tokens, /*all_logits=*/true);
  Status st = write_npy_f32(a.out, logits.data(), {n, m.config().vocab_size});
  if (!st.is_ok()) {
    std::fprintf(stderr, "r1serve logits: %s\n", st.message().c_str());
    return 1;
  }
  return 0;
}

void setup_logits(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<LogitsArgs>();
  auto* cmd = app.add_subcommand(
      "logits", "Write the logits at every position of a token sequence to a .npy file");
  args->model.add_to(cmd);
  cmd->add_option("--tokens", args->tokens, "Comma-separated token ids, e.g. 5,17,300")->required();
  cmd->add_option("--out,-o", args->out, "Output .npy file (float32 [n_tokens, vocab_size])")
      ->required();
  cmd->callback([args, &exit_code] { exit_code = run_logits(*args); });
}

const CommandRegistrar kRegistrar("logits", setup_logits);

}  // namespace
}  // namespace r1::app
