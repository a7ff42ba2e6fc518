// Checkpoint: finds the safetensors files of a model (index, directory scan or
// single file), validates the index against the files, and serves tensors as
// zero-copy views or converted / FP8-dequantized copies.
#include "io/checkpoint.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "io/json_strict.h"
#include "io/tensor_convert.h"

namespace r1::io {

namespace fs = std::filesystem;

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A weight_map file name must stay inside the model directory.
bool is_safe_relative(const std::string& name) {
  if (name.empty() || name.find('\0') != std::string::npos) return false;
  fs::path p(name);
  if (p.is_absolute() || p.has_root_name() || p.has_root_directory()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

bool regular_file_exists(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

}  // namespace

Status Checkpoint::add_file(SafetensorsFile file) {
  const int index = static_cast<int>(files_.size());
  for (const TensorEntry& e : file.tensors()) {
    auto [it, inserted] = index_.emplace(e.name, e);
    if (!inserted)
      return make_error(ErrorCode::kInvalidArgument,
                        "checkpoint '{}': tensor '{}' is stored in both '{}' and '{}'", path_,
                        e.name, files_[static_cast<size_t>(it->second.file_index)].path(),
                        file.path());
    it->second.file_index = index;
  }
  files_.push_back(std::move(file));
  return Status::ok();
}

Result<Checkpoint> Checkpoint::open(const std::string& path) {
  Checkpoint ck;
  ck.path_ = path;
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st))
    return make_error(ErrorCode::kNotFound, "checkpoint '{}' does not exist", path);

  if (!fs::is_directory(st)) {
    R1_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(path));
    R1_RETURN_IF_ERROR(ck.add_file(std::move(f)));
    return ck;
  }

  const fs::path dir(path);
  const fs::path index_path = dir / kIndexName;
  if (regular_file_exists(index_path)) {
    const std::string where = "index '" + index_path.string() + "'";
    R1_ASSIGN_OR_RETURN(auto mapped, MappedFile::open(index_path.string()));
    if (mapped->size() > SafetensorsFile::kMaxHeaderBytes)
      return make_error(ErrorCode::kInvalidArgument, "{}: {} bytes exceeds the limit of {}", where,
                        mapped->size(), SafetensorsFile::kMaxHeaderBytes);
    std::string_view text(reinterpret_cast<const char*>(mapped->data()), mapped->size());
    R1_ASSIGN_OR_RETURN(nlohmann::json index, parse_json_strict(text, where));
    if (!index.is_object())
      return make_error(ErrorCode::kInvalidArgument, "{}: must be a JSON object, found {}", where,
                        json_kind(index));
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object())
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: expected a \"weight_map\" object of tensor name -> file name", where);
    // Files in order of first appearance; each opened and validated once.
    std::vector<std::string> file_names;
    std::map<std::string, int> file_slot;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it->is_string())
        return make_error(ErrorCode::kInvalidArgument,
                          "{}: weight_map entry for tensor '{}' must be a file name string, "
                          "found {}",
                          where, it.key(), json_kind(*it));
      const std::string& name = it->get_ref<const std::string&>();
      if (file_slot.count(name)) continue;
      if (!is_safe_relative(name))
        return make_error(ErrorCode::kInvalidArgument,
                          "{}: tensor '{}' maps to '{}', which is not a plain relative path "
                          "inside the model directory",
                          where, it.key(), name);
      if (!regular_file_exists(dir / name))
        return make_error(ErrorCode::kNotFound,
                          "{}: tensor '{}' maps to '{}', which does not exist in '{}'", where,
                          it.key(), name, path);
      file_slot[name] = static_cast<int>(file_names.size());
      file_names.push_back(name);
    }
    if (file_names.empty())
      return make_error(ErrorCode::kInvalidArgument, "{}: weight_map is empty", where);
    for (const std::string& name : file_names) {
      R1_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open((dir / name).string()));
      R1_RETURN_IF_ERROR(ck.add_file(std::move(f)));
    }
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      const std::string& name = it->get_ref<const std::string&>();
      const int slot = file_slot[name];
      auto found = ck.index_.find(it.key());
      if (found == ck.index_.end() || found->second.file_index != slot)
        return make_error(ErrorCode::kInvalidArgument,
                          "{}: maps tensor '{}' to '{}', but that file has no such tensor", where,
                          it.key(), (dir / name).string());
    }
    return ck;
  }

  std::vector<std::string> shards;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    if (p.extension() == ".safetensors" && regular_file_exists(p)) shards.push_back(p.string());
  }
  if (ec)
    return make_error(ErrorCode::kIo, "cannot list checkpoint directory '{}': {}", path,
                      ec.message());
  if (shards.empty())
    return make_error(ErrorCode::kNotFound,
                      "checkpoint directory '{}' has neither {} nor any *.safetensors file", path,
                      kIndexName);
  std::sort(shards.begin(), shards.end());
  for (const std::string& s : shards) {
    R1_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(s));
    R1_RETURN_IF_ERROR(ck.add_file(std::move(f)));
  }
  return ck;
}

const TensorEntry* Checkpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &it->second;
}

const std::string& Checkpoint::file_of(const TensorEntry& e) const {
  return files_[static_cast<size_t>(e.file_index)].path();
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, e] : index_) out.push_back(name);
  return out;
}

Result<Tensor> Checkpoint::view(const std::string& name) const {
  const TensorEntry* e = find(name);
  if (e == nullptr)
    return make_error(ErrorCode::kNotFound, "tensor '{}' not found in checkpoint '{}'", name,
                      path_);
  if (e->shape.size() > static_cast<size_t>(Shape::kMaxRank))
    return make_error(ErrorCode::kUnsupported,
                      "'{}': tensor '{}' has rank {}; at most {} supported", file_of(*e), name,
                      e->shape.size(), Shape::kMaxRank);
  const auto& file = files_[static_cast<size_t>(e->file_index)].file();
  const uint8_t* p = file->data() + e->offset;
  Shape shape(e->shape);
  if (e->offset % dtype_size(e->dtype) != 0) {
    // Misaligned in the file (legal, but typed access would be UB): copy.
    Tensor t = Tensor::empty(shape, e->dtype);
    if (e->nbytes) std::memcpy(t.raw(), p, e->nbytes);
    return t;
  }
  return Tensor::wrap(const_cast<uint8_t*>(p), shape, e->dtype, file);
}

Result<Tensor> Checkpoint::load(const std::string& name, const Shape& expected, DType want,
                                int64_t block_rows, int64_t block_cols) const {
  const TensorEntry* e = find(name);
  if (e == nullptr)
    return make_error(ErrorCode::kNotFound, "tensor '{}' not found in checkpoint '{}'", name,
                      path_);
  const std::string& file = file_of(*e);
  if (e->shape != expected.to_vector())
    return make_error(ErrorCode::kInvalidArgument,
                      "'{}': tensor '{}': expected shape {}, found {} ({})", file, name,
                      expected.to_string(), shape_str(e->shape), dtype_name(e->dtype));
  if (e->dtype == want) return view(name);
  if (!is_load_target(want))
    return make_error(ErrorCode::kUnsupported,
                      "'{}': tensor '{}' is stored as {}; it can be loaded as F32, BF16 or F16, "
                      "not {}",
                      file, name, dtype_name(e->dtype), dtype_name(want));
  const auto& mapped = files_[static_cast<size_t>(e->file_index)].file();
  const uint8_t* src = mapped->data() + e->offset;
  Tensor out = Tensor::empty(expected, want);

  if (e->dtype == DType::kF8E4M3) {
    if (expected.rank() != 2)
      return make_error(ErrorCode::kUnsupported,
                        "'{}': FP8 tensor '{}' has rank {}; block-scaled FP8 needs a 2-D weight",
                        file, name, expected.rank());
    if (block_rows <= 0 || block_cols <= 0)
      return make_error(ErrorCode::kInvalidArgument, "'{}': tensor '{}': bad FP8 block size {}x{}",
                        file, name, block_rows, block_cols);
    const std::string scale_name = name + "_scale_inv";
    const TensorEntry* se = find(scale_name);
    if (se == nullptr)
      return make_error(ErrorCode::kNotFound,
                        "'{}': FP8 tensor '{}' has no block scales: '{}' not found in checkpoint "
                        "'{}'",
                        file, name, scale_name, path_);
    const int64_t rows = expected[0], cols = expected[1];
    const std::vector<int64_t> want_scale = {(rows + block_rows - 1) / block_rows,
                                             (cols + block_cols - 1) / block_cols};
    if (se->shape != want_scale || !dtype_is_float(se->dtype) || dtype_size(se->dtype) == 1)
      return make_error(ErrorCode::kInvalidArgument,
                        "'{}': scale tensor '{}' for FP8 weight '{}' {}: expected F32 {} "
                        "({}x{} blocks), found {} {}",
                        file_of(*se), scale_name, name, shape_str(e->shape), shape_str(want_scale),
                        block_rows, block_cols, dtype_name(se->dtype), shape_str(se->shape));
    R1_ASSIGN_OR_RETURN(Tensor scale,
                        load(scale_name, Shape(want_scale), DType::kF32, block_rows, block_cols));
    dequantize_fp8_blocks(src, rows, cols, scale.data<float>(), block_rows, block_cols, out.raw(),
                          want);
  } else {
    convert_elements(src, e->dtype, out.raw(), want, expected.numel());
  }
  // The source pages are not needed again by this process; let them go early
  // (they refault from the file if anyone reads them again).
  if (e->nbytes >= (uint64_t{64} << 20)) mapped->advise(e->offset, e->nbytes, MADV_DONTNEED);
  return out;
}

}  // namespace r1::io
