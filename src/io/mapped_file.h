// MappedFile: a read-only memory map of a whole file, unmapped when the last
// owner (tensor views included) lets go.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"

namespace r1::io {

class MappedFile {
 public:
  static Result<std::shared_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // madvise() on the pages covering [offset, offset + length), clamped to the
  // file; a hint only, failures are ignored. `advice` is MADV_* from sys/mman.h.
  void advise(uint64_t offset, uint64_t length, int advice) const;

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
};

}  // namespace r1::io
