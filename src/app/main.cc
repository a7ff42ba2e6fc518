// Entry point of the single `r1serve` executable: the subcommands registered by
// the cmd_*.cc files; errors reach the user as one clear line and exit 1.
#include <algorithm>
#include <cstdio>
#include <exception>

#include "app/command_registry.h"

namespace r1::app {
std::vector<CommandEntry>& command_registry() {
  static std::vector<CommandEntry> registry;
  return registry;
}
}  // namespace r1::app

int main(int argc, char** argv) {
  CLI::App app{"r1serve: an inference server for DeepSeek-R1 and its distills"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "r1serve 0.1.0");
  int exit_code = 0;
  auto& registry = r1::app::command_registry();
  std::sort(registry.begin(), registry.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  for (auto& entry : registry) entry.setup(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "r1serve: %s\n", e.what());
    return 1;
  }
  return exit_code;
}
