// SafetensorsFile::open: maps a file and validates its whole header before any
// tensor is handed out. Every number from the file is checked (sizes with
// overflow checks, offsets against the file length) and every error names the
// file, the tensor and what was expected versus found.
#include <algorithm>
#include <limits>

#include "io/checkpoint.h"
#include "io/json_strict.h"

namespace r1::io {

namespace {

using json = nlohmann::json;

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A JSON number that is a non-negative integer fitting in int64.
bool as_index(const json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer()) {
    int64_t v = j.get<int64_t>();
    if (v < 0) return false;
    *out = static_cast<uint64_t>(v);
    return true;
  }
  return false;
}

std::string describe_value(const json& j) {
  std::string s = j.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return std::string(json_kind(j)) + " " + s;
}

Status parse_entry(const std::string& where, const std::string& name, const json& v,
                   uint64_t data_size, TensorEntry* e) {
  auto bad = [&](const std::string& what) {
    return Status(ErrorCode::kInvalidArgument, where + ": tensor '" + name + "': " + what);
  };
  if (!v.is_object()) return bad("entry must be an object, found " + describe_value(v));
  auto dt = v.find("dtype");
  if (dt == v.end()) return bad("missing \"dtype\"");
  if (!dt->is_string()) return bad("\"dtype\" must be a string, found " + describe_value(*dt));
  auto dtype = dtype_from_name(dt->get_ref<const std::string&>());
  if (!dtype)
    return bad("unknown dtype \"" + dt->get<std::string>() +
               "\" (expected one of BOOL U8 I8 I16 U16 F16 BF16 I32 U32 F32 F64 I64 U64 "
               "F8_E4M3 F8_E5M2)");
  auto sh = v.find("shape");
  if (sh == v.end()) return bad("missing \"shape\"");
  if (!sh->is_array()) return bad("\"shape\" must be an array, found " + describe_value(*sh));
  if (sh->size() > static_cast<size_t>(SafetensorsFile::kMaxRank))
    return bad(
        fmt::format("rank {} exceeds the maximum of {}", sh->size(), SafetensorsFile::kMaxRank));
  uint64_t numel = 1;
  bool overflow = false;
  e->shape.clear();
  for (const json& d : *sh) {
    uint64_t dim;
    if (!as_index(d, &dim) || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return bad("shape dimensions must be non-negative integers below 2^63, found " +
                 describe_value(d));
    e->shape.push_back(static_cast<int64_t>(dim));
    if (__builtin_mul_overflow(numel, dim, &numel)) overflow = true;
  }
  uint64_t nbytes = 0;
  if (overflow || __builtin_mul_overflow(numel, dtype_size(*dtype), &nbytes))
    return bad("shape " + shape_str(e->shape) + " x " + std::string(dtype_name(*dtype)) +
               " overflows 64-bit byte size");
  auto off = v.find("data_offsets");
  if (off == v.end()) return bad("missing \"data_offsets\"");
  uint64_t begin = 0, end = 0;
  if (!off->is_array() || off->size() != 2 || !as_index((*off)[0], &begin) ||
      !as_index((*off)[1], &end))
    return bad("\"data_offsets\" must be [begin, end] with non-negative integers, found " +
               describe_value(*off));
  if (begin > end) return bad(fmt::format("data_offsets begin {} is after end {}", begin, end));
  if (end - begin != nbytes)
    return bad(
        fmt::format("shape {} x {} ({} bytes each) needs {} bytes, data_offsets [{}, {}] "
                    "span {}",
                    shape_str(e->shape), dtype_name(*dtype), dtype_size(*dtype), nbytes, begin, end,
                    end - begin));
  if (end > data_size)
    return bad(
        fmt::format("data_offsets [{}, {}] run past the data section of {} bytes "
                    "(file truncated?)",
                    begin, end, data_size));
  e->name = name;
  e->dtype = *dtype;
  e->offset = begin;  // relative for now; made absolute by the caller
  e->nbytes = nbytes;
  return Status::ok();
}

}  // namespace

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  R1_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  const std::string where = "safetensors file '" + path + "'";
  const uint64_t size = file->size();
  if (size < 8)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: {} bytes, too short for the 8-byte header length", where, size);
  const uint8_t* p = file->data();
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | p[i];
  if (header_len > kMaxHeaderBytes)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: header length {} exceeds the limit of {} bytes", where, header_len,
                      kMaxHeaderBytes);
  if (header_len > size - 8)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: header length {} exceeds the {} bytes after the length field "
                      "(file truncated?)",
                      where, header_len, size - 8);
  if (header_len < 2)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: header length {} is too short for a JSON object", where, header_len);
  std::string_view text(reinterpret_cast<const char*>(p + 8), header_len);
  R1_ASSIGN_OR_RETURN(json header, parse_json_strict(text, where + " header"));
  if (!header.is_object())
    return make_error(ErrorCode::kInvalidArgument, "{}: header must be a JSON object, found {}",
                      where, json_kind(header));

  SafetensorsFile out;
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  out.tensors_.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object())
        return make_error(ErrorCode::kInvalidArgument,
                          "{}: __metadata__ must be an object of strings, found {}", where,
                          describe_value(*it));
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          return make_error(ErrorCode::kInvalidArgument,
                            "{}: __metadata__ value of '{}' must be a string, found {}", where,
                            m.key(), describe_value(*m));
        out.metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    if (name.empty())
      return make_error(ErrorCode::kInvalidArgument, "{}: empty tensor name", where);
    TensorEntry e;
    R1_RETURN_IF_ERROR(parse_entry(where, name, *it, data_size, &e));
    out.tensors_.push_back(std::move(e));
  }

  // No two non-empty regions may overlap.
  std::vector<const TensorEntry*> order;
  order.reserve(out.tensors_.size());
  for (const auto& e : out.tensors_)
    if (e.nbytes > 0) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->name < b->name;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    const TensorEntry* a = order[i - 1];
    const TensorEntry* b = order[i];
    if (a->offset + a->nbytes > b->offset)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: tensors '{}' (data_offsets [{}, {}]) and '{}' (data_offsets [{}, "
                        "{}]) overlap",
                        where, a->name, a->offset, a->offset + a->nbytes, b->name, b->offset,
                        b->offset + b->nbytes);
  }
  for (auto& e : out.tensors_) e.offset += data_start;
  out.file_ = std::move(file);
  return out;
}

}  // namespace r1::io
