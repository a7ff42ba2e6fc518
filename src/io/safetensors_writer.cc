// write_safetensors: the header (ordered as given, padded with spaces so the
// data starts 8-byte aligned) and the raw tensor bytes. Written to a temporary
// file beside the target and renamed, so a reader never sees half a file.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"

namespace r1::io {

Status write_safetensors(const std::string& path,
                         const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__")
      return make_error(ErrorCode::kInvalidArgument, "writing '{}': invalid tensor name '{}'", path,
                        name);
    if (!seen.insert(name).second)
      return make_error(ErrorCode::kInvalidArgument, "writing '{}': duplicate tensor '{}'", path,
                        name);
    if (!t.defined() || t.device() != Device::kCpu)
      return make_error(ErrorCode::kInvalidArgument,
                        "writing '{}': tensor '{}' is not a defined CPU tensor", path, name);
    nlohmann::ordered_json e;
    e["dtype"] = std::string(dtype_name(t.dtype()));
    e["shape"] = t.shape().to_vector();
    e["data_offsets"] = {offset, offset + t.nbytes()};
    offset += t.nbytes();
    header[name] = std::move(e);
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr)
    return make_error(ErrorCode::kIo, "cannot create '{}': {}", tmp, std::strerror(errno));
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(text.data(), 1, n, f) == n;
  for (const auto& [name, t] : tensors) {
    if (!ok) break;
    ok = t.nbytes() == 0 || std::fwrite(t.raw(), 1, t.nbytes(), f) == t.nbytes();
  }
  int err = ok ? 0 : errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    std::remove(tmp.c_str());
    return make_error(ErrorCode::kIo, "cannot write '{}': {}", path, std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    return make_error(ErrorCode::kIo, "cannot rename '{}' to '{}': {}", tmp, path,
                      std::strerror(err));
  }
  return Status::ok();
}

}  // namespace r1::io
