// Checkpoint: the safetensors files of a model directory (one file, or shards
// listed by model.safetensors.index.json), memory-mapped and validated before
// any tensor is touched. Tensors come out as zero-copy views when the stored
// dtype is the wanted one; FP8 (F8_E4M3) weights are dequantized with their
// 128x128 `weight_scale_inv` block scales, wherever those are stored.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "io/mapped_file.h"

namespace r1::io {

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // absolute byte offset of the data in its file
  uint64_t nbytes = 0;
  int file_index = 0;
};

// One validated safetensors file.
class SafetensorsFile {
 public:
  // Limits that every header is held to.
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
  static constexpr int kMaxRank = 8;

  // Maps and validates `path`: header length cap, well-formed JSON, known
  // dtypes, shape x element size == data_offsets span (overflow-checked),
  // offsets inside the file, no overlapping regions.
  static Result<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::shared_ptr<MappedFile>& file() const { return file_; }

 private:
  std::shared_ptr<MappedFile> file_;
  std::vector<TensorEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

class Checkpoint {
 public:
  // `path` is a model directory (model.safetensors.index.json, else every
  // *.safetensors file in it) or a single .safetensors file.
  static Result<Checkpoint> open(const std::string& path);

  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorEntry* find(const std::string& name) const;
  const std::string& file_of(const TensorEntry& e) const;
  std::vector<std::string> names() const;
  size_t num_files() const { return files_.size(); }
  // The path given to open().
  const std::string& path() const { return path_; }
  const std::vector<SafetensorsFile>& files() const { return files_; }

  // The stored tensor, zero-copy, in its stored dtype.
  Result<Tensor> view(const std::string& name) const;

  // The tensor with the `expected` shape in dtype `want` (F32, BF16 or F16):
  // zero-copy when stored as `want`, converted otherwise. F8_E4M3 weights are
  // dequantized with `<name>_scale_inv` (block_rows x block_cols blocks).
  // Errors name the file, the tensor and what was expected.
  Result<Tensor> load(const std::string& name, const Shape& expected, DType want,
                      int64_t block_rows = 128, int64_t block_cols = 128) const;

 private:
  Status add_file(SafetensorsFile file);

  std::string path_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, TensorEntry> index_;
};

// Writes tensors (CPU, any dtype) to a safetensors file, in the given order,
// with optional string metadata. Used by `r1serve make-model` and by tests.
Status write_safetensors(const std::string& path,
                         const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace r1::io
