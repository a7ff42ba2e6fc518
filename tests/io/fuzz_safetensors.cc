// libFuzzer entry for the safetensors reader and the config.json parser:
// the input is written to a scratch file, opened, and every tensor it declares
// is viewed and loaded as F32 (FP8 with its scales). Built only with clang.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "io/checkpoint.h"
#include "io/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace r1;
  if (size > 0 && data[0] == '#') {  // '#' prefix: fuzz the config parser instead
    auto c = io::parse_model_config(std::string(reinterpret_cast<const char*>(data) + 1, size - 1),
                                    "fuzz/config.json");
    if (c.is_ok()) {
      (void)c->attention_scale();
      (void)c->parameter_count();
    }
    return 0;
  }
  static const std::string path = "/tmp/r1_fuzz_safetensors_" + std::to_string(::getpid());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto ck = io::Checkpoint::open(path);
  if (!ck.is_ok()) return 0;
  for (const std::string& name : ck->names()) {
    const io::TensorEntry* e = ck->find(name);
    if (e->shape.size() > static_cast<size_t>(Shape::kMaxRank)) continue;
    auto v = ck->view(name);
    auto t = ck->load(name, Shape(e->shape), DType::kF32);
    (void)v;
    (void)t;
  }
  return 0;
}
