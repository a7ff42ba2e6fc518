// The subcommands of `r1serve`. Each lives in its own cmd_*.cc file (compiled
// straight into the executable) and registers itself with a static
// CommandRegistrar, so adding a command never touches main.cc.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace r1::app {

// Adds a subcommand to `app`. The subcommand's callback must store the process
// exit code in `exit_code` (0 on success).
using CommandSetup = std::function<void(CLI::App& app, int& exit_code)>;

struct CommandEntry {
  std::string name;  // for ordering in --help
  CommandSetup setup;
};

std::vector<CommandEntry>& command_registry();

struct CommandRegistrar {
  CommandRegistrar(std::string name, CommandSetup setup) {
    command_registry().push_back({std::move(name), std::move(setup)});
  }
};

}  // namespace r1::app
