// Loading a model from the shared command-line options.
#include "app/model_args.h"

#include <fmt/format.h>

#ifdef R1_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace r1::app {

void ModelArgs::add_to(CLI::App* cmd) {
  cmd->add_option("--model,-m", model_dir, "Model directory (config.json and safetensors)")
      ->required()
      ->envname("R1SERVE_MODEL")
      ->group("Model");
  cmd->add_option("--device", device, "Device: cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str()
      ->envname("R1SERVE_DEVICE")
      ->group("Model");
  cmd->add_option("--threads", threads, "CPU threads (0: one per core)")
      ->capture_default_str()
      ->envname("R1SERVE_THREADS")
      ->group("Model");
  cmd->add_option("--dtype", dtype, "Weight dtype: auto, float32, bfloat16")
      ->check(CLI::IsMember({"auto", "float32", "bfloat16"}))
      ->capture_default_str()
      ->envname("R1SERVE_DTYPE")
      ->group("Model");
  cmd->add_option("--load-format", load_format,
                  "auto/safetensors: read the checkpoint; dummy: random weights from --seed")
      ->check(CLI::IsMember({"auto", "safetensors", "dummy"}))
      ->capture_default_str()
      ->envname("R1SERVE_LOAD_FORMAT")
      ->group("Model");
  cmd->add_option("--quantization,-q", quantization,
                  "none, or int8: weight-only int8 with per-row scales (CPU backend)")
      ->check(CLI::IsMember({"none", "int8"}))
      ->capture_default_str()
      ->envname("R1SERVE_QUANTIZATION")
      ->group("Model");
  cmd->add_option("--gpu-memory-utilization", gpu_memory_utilization,
                  "Fraction of GPU memory the CUDA backend may use (--device cuda)")
      ->check(CLI::Range(0.05, 1.0))
      ->capture_default_str()
      ->envname("R1SERVE_GPU_MEMORY_UTILIZATION")
      ->group("Model");
  cmd->add_option("--seed", seed,
                  "Seed of --load-format dummy weights (and of sampling in generate)")
      ->capture_default_str()
      ->envname("R1SERVE_SEED")
      ->group("Model");
}

Result<LoadedModel> load_model(const ModelArgs& args) {
  LoadedModel lm;
  if (args.device == "cuda") {
#ifdef R1_WITH_CUDA
    if (backend::cuda_device_count() == 0)
      return make_error(ErrorCode::kUnsupported, "--device cuda: no CUDA device is visible");
    lm.backend = backend::make_cuda_backend(0, args.gpu_memory_utilization);
#else
    return make_error(
        ErrorCode::kUnsupported,
        "--device cuda: this build has no CUDA backend (nvcc was not found); use --device cpu");
#endif
  } else {
    lm.backend = backend::make_cpu_backend(args.threads);
  }
  model::LoadOptions opt;
  if (args.dtype == "float32") opt.weight_dtype = model::WeightDType::kF32;
  if (args.dtype == "bfloat16") opt.weight_dtype = model::WeightDType::kBF16;
  if (args.quantization == "int8") {
    if (args.device != "cpu")
      return make_error(ErrorCode::kUnsupported, "--quantization int8 runs on --device cpu only");
    opt.weight_dtype = model::WeightDType::kInt8;
  }
  R1_ASSIGN_OR_RETURN(lm.model, model::load_model_dir(args.model_dir, *lm.backend, opt,
                                                      args.load_format == "dummy", args.seed));
  return lm;
}

}  // namespace r1::app
