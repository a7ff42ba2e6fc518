// `r1serve version`: the build's version and which backends it carries.
#include <cstdio>

#include "app/command_registry.h"

namespace r1::app {
namespace {

void setup_version(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("version", "Print the version and the compiled-in backends");
  cmd->callback([&exit_code] {
#ifdef R1_WITH_CUDA
    const char* cuda = "yes";
#else
    const char* cuda = "no";
#endif
    std::printf("r1serve 0.1.0 (backends: cpu, cuda=%s)\n", cuda);
    exit_code = 0;
  });
}

const CommandRegistrar kRegistrar("version", setup_version);

}  // namespace
}  // namespace r1::app
