// .npy header parsing (the small Python-dict header) and writing.
#include "core/npy.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

#include <fmt/format.h>

namespace r1 {

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {
size_t descr_size(const std::string& d) {
  if (d == "<f4" || d == "<i4" || d == "<u4") return 4;
  if (d == "<f8" || d == "<i8" || d == "<u8") return 8;
  if (d == "<f2" || d == "<i2" || d == "<u2") return 2;
  if (d == "|u1" || d == "|i1" || d == "|b1") return 1;
  return 0;
}
}  // namespace

Result<NpyArray> read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return make_error(ErrorCode::kIo, "cannot open {}", path);
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    return make_error(ErrorCode::kInvalidArgument, "{}: not a .npy file", path);
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    uint8_t b[2];
    if (!f.read(reinterpret_cast<char*>(b), 2))
      return make_error(ErrorCode::kInvalidArgument, "{}: truncated", path);
    hlen = b[0] | (b[1] << 8);
  } else {
    uint8_t b[4];
    if (!f.read(reinterpret_cast<char*>(b), 4))
      return make_error(ErrorCode::kInvalidArgument, "{}: truncated", path);
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  if (hlen > (1u << 20))
    return make_error(ErrorCode::kInvalidArgument, "{}: header too long", path);
  std::string header(hlen, '\0');
  if (!f.read(header.data(), hlen))
    return make_error(ErrorCode::kInvalidArgument, "{}: truncated header", path);
  NpyArray a;
  auto dpos = header.find("'descr':");
  auto q1 = header.find('\'', dpos + 8);
  auto q2 = header.find('\'', q1 + 1);
  if (dpos == std::string::npos || q1 == std::string::npos || q2 == std::string::npos)
    return make_error(ErrorCode::kInvalidArgument, "{}: no descr in header", path);
  a.descr = header.substr(q1 + 1, q2 - q1 - 1);
  if (header.find("'fortran_order': True") != std::string::npos)
    return make_error(ErrorCode::kUnsupported, "{}: Fortran order", path);
  auto spos = header.find("'shape':");
  auto p1 = header.find('(', spos);
  auto p2 = header.find(')', p1);
  if (spos == std::string::npos || p1 == std::string::npos || p2 == std::string::npos)
    return make_error(ErrorCode::kInvalidArgument, "{}: no shape in header", path);
  std::string dims = header.substr(p1 + 1, p2 - p1 - 1);
  size_t i = 0;
  while (i < dims.size()) {
    while (i < dims.size() && (dims[i] == ' ' || dims[i] == ',')) ++i;
    if (i >= dims.size()) break;
    size_t j = i;
    while (j < dims.size() && dims[j] >= '0' && dims[j] <= '9') ++j;
    if (j == i) return make_error(ErrorCode::kInvalidArgument, "{}: bad shape '{}'", path, dims);
    a.shape.push_back(std::stoll(dims.substr(i, j - i)));
    i = j;
  }
  size_t esize = descr_size(a.descr);
  if (esize == 0) return make_error(ErrorCode::kUnsupported, "{}: dtype {}", path, a.descr);
  size_t bytes = static_cast<size_t>(a.numel()) * esize;
  a.data.resize(bytes);
  if (!f.read(a.data.data(), static_cast<std::streamsize>(bytes)))
    return make_error(ErrorCode::kInvalidArgument, "{}: truncated data", path);
  return a;
}

Status write_npy_f32(const std::string& path, const float* data,
                     const std::vector<int64_t>& shape) {
  std::string dims;
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims += std::to_string(shape[i]) + ",";
    if (i + 1 < shape.size()) dims += " ";
    n *= shape[i];
  }
  if (shape.size() > 1) dims.pop_back();  // "(3,)" for rank 1, "(3, 4)" otherwise
  std::string header =
      fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}", dims);
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) return make_error(ErrorCode::kIo, "cannot write {}", path);
  const char magic[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  uint16_t hl = static_cast<uint16_t>(header.size());
  uint8_t hlb[2] = {static_cast<uint8_t>(hl & 0xff), static_cast<uint8_t>(hl >> 8)};
  bool ok =
      std::fwrite(magic, 1, 8, f.get()) == 8 && std::fwrite(hlb, 1, 2, f.get()) == 2 &&
      std::fwrite(header.data(), 1, header.size(), f.get()) == header.size() &&
      std::fwrite(data, sizeof(float), static_cast<size_t>(n), f.get()) == static_cast<size_t>(n);
  if (!ok) return make_error(ErrorCode::kIo, "short write to {}", path);
  return Status::ok();
}

}  // namespace r1
