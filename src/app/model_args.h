// Command-line options shared by the commands that load a model (logits,
// generate, bench, serve): --model, --device, --threads, --dtype,
// --load-format, --seed; and the loading itself.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "backend/backend.h"
#include "core/status.h"
#include "model/model.h"

namespace r1::app {

struct ModelArgs {
  std::string model_dir;
  std::string device = "cpu";
  int threads = 0;
  std::string dtype = "auto";
  std::string load_format = "auto";
  std::string quantization = "none";    // "int8": weight-only int8 (CPU)
  double gpu_memory_utilization = 0.9;  // share of GPU memory for weights + KV cache
  uint64_t seed = 0;

  // Adds the options to `cmd` (group "Model").
  void add_to(CLI::App* cmd);
};

struct LoadedModel {
  std::unique_ptr<backend::Backend> backend;
  std::unique_ptr<model::Model> model;
};

Result<LoadedModel> load_model(const ModelArgs& args);

}  // namespace r1::app
