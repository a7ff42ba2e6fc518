// `r1serve make-model --config config.json --out DIR --seed S`: writes a model
// directory with seeded random weights for every tensor of the architecture
// (official names and shapes), for demos, benchmarks and the default model.
#include <cstdio>

#include "app/command_registry.h"
#include "model/weight_source.h"

namespace r1::app {
namespace {

struct MakeModelArgs {
  std::string config;
  std::string out;
  uint64_t seed = 0;
};

void setup_make_model(CLI::App& app, int& exit_code) {
  auto a = std::make_shared<MakeModelArgs>();
  auto* cmd =
      app.add_subcommand("make-model", "Write a random-weight checkpoint for a config.json");
  cmd->add_option("--config", a->config, "config.json of the architecture")->required();
  cmd->add_option("--out,-o", a->out, "Output directory")->required();
  cmd->add_option("--seed", a->seed, "Seed of the weights")->capture_default_str();
  cmd->callback([a, &exit_code] {
    Status st = model::write_random_checkpoint(a->config, a->out, a->seed);
    if (!st.is_ok()) {
      std::fprintf(stderr, "r1serve make-model: %s\n", st.message().c_str());
      exit_code = 1;
      return;
    }
    exit_code = 0;
  });
}

const CommandRegistrar kRegistrar("make-model", setup_make_model);

}  // namespace
}  // namespace r1::app
