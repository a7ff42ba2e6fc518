// BpeModel: the byte-level BPE model of a Hugging Face tokenizer.json. Words
// are raw bytes (the byte-to-unicode mapping of GPT-2 is undone at load time),
// merges are applied by rank exactly as `tokenizers` does, and results are kept
// in a sharded word cache so the hot path is one hash lookup per word.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace r1::tok {

// GPT-2's reversible byte <-> printable character mapping.
const std::array<std::string, 256>& byte_to_unicode();
// Undoes the mapping: false when some character of `token` is not in it.
bool unicode_to_bytes(std::string_view token, std::string& bytes);

uint64_t hash_bytes(std::string_view s);

// Transparent hashing so maps keyed by std::string take string_view lookups.
struct BytesHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return hash_bytes(s); }
};
template <typename V>
using BytesMap = std::unordered_map<std::string, V, BytesHash, std::equal_to<>>;

class BpeModel {
 public:
  // `model` is the "model" object of tokenizer.json.
  static Result<std::unique_ptr<BpeModel>> from_json(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized word (raw bytes). Thread-safe.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  // Tokens as written in tokenizer.json, indexed by id ("" for gaps).
  const std::vector<std::string>& tokens() const { return tokens_; }
  int32_t token_to_id(std::string_view token) const;
  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }

 private:
  struct MergeValue {
    int32_t rank;
    int32_t new_id;
  };
  // Open-addressing map (a, b) -> merge, keyed by a << 32 | b.
  struct MergeTable {
    std::vector<uint64_t> keys;
    std::vector<MergeValue> values;
    uint64_t mask = 0;
    void init(size_t n);
    void insert(uint64_t key, MergeValue v);
    const MergeValue* find(uint64_t key) const;
  };
  static constexpr uint64_t kEmptyKey = ~uint64_t{0};

  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  int32_t bytes_to_id(std::string_view bytes) const;

  std::vector<std::string> tokens_;
  BytesMap<int32_t> token_ids_;            // by tokenizer.json string
  BytesMap<int32_t> byte_ids_;             // by raw bytes
  std::array<int32_t, 256> byte_token_{};  // single-byte token ids
  MergeTable merges_;
  bool ignore_merges_ = false;

  class WordCache;
  WordCache& thread_cache() const;
  uint64_t serial_ = 0;  // identifies this model to the per-thread word caches
};

}  // namespace r1::tok
