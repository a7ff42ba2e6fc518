// Tokenizer: a Hugging Face tokenizer.json (+ tokenizer_config.json) loaded
// into an immutable, thread-safe object: encode text to ids exactly as the
// `tokenizers` library does (added tokens, NFC, regex pre-tokenizers,
// byte-level BPE), decode ids back to text, and look up special tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/thread_pool.h"
#include "tokenizer/added_vocabulary.h"

namespace r1::tok {

class BpeModel;
class PreTokenizer;

class Tokenizer {
 public:
  // `path` is a tokenizer.json or a directory holding one; tokenizer_config.json
  // next to it is read when present (add_bos_token, bos/eos tokens).
  static Result<std::shared_ptr<Tokenizer>> load(const std::string& path);
  // The same from the two files' contents (`config_json` may be empty).
  // `origin` names the source in error messages.
  static Result<std::shared_ptr<Tokenizer>> from_json(std::string_view tokenizer_json,
                                                      std::string_view config_json,
                                                      const std::string& origin);
  ~Tokenizer();

  // Ids of `text`. Added tokens in the text are always recognized;
  // add_special_tokens adds BOS/EOS as the tokenizer config says (or as the
  // TemplateProcessing post-processor does when the config says nothing).
  // Invalid UTF-8 is first repaired (each bad subpart becomes U+FFFD).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // Appends to `out` instead.
  void encode_into(std::string_view text, bool add_special_tokens, std::vector<int32_t>& out) const;
  // Encodes every text on the pool's threads.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string_view>& texts,
                                                 ThreadPool& pool,
                                                 bool add_special_tokens = false) const;

  // Text of `ids` (unknown ids are skipped, as `tokenizers` does); byte
  // sequences that are not valid UTF-8 become U+FFFD.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  int32_t token_to_id(std::string_view token) const;  // -1 when unknown
  std::string id_to_token(int32_t id) const;          // "" when unknown
  // The bytes that decoding `id` contributes (before UTF-8 repair); empty
  // for unknown ids.
  std::string_view token_bytes(int32_t id) const;
  bool is_special(int32_t id) const;
  bool is_known(int32_t id) const;

  int32_t bos_id() const { return bos_id_; }  // -1 when none
  int32_t eos_id() const { return eos_id_; }  // -1 when none
  // One past the largest id (model vocab and added tokens).
  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }
  const std::vector<AddedToken>& added_tokens() const { return added_.tokens(); }
  // What add_special_tokens puts around the ids.
  const std::vector<int32_t>& prefix_ids() const { return prefix_ids_; }
  const std::vector<int32_t>& suffix_ids() const { return suffix_ids_; }

 private:
  Tokenizer();
  void encode_segment(std::string_view segment, std::vector<int32_t>& out) const;
  void encode_words(std::string_view text, std::vector<int32_t>& out) const;

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  AddedVocabulary added_;
  bool nfc_ = false;
  std::vector<std::string> id_to_token_;
  std::vector<std::string> id_bytes_;
  std::vector<uint8_t> id_flags_;                                  // kKnown | kSpecial
  std::vector<std::pair<std::string, int32_t>> added_by_content_;  // sorted
  std::vector<int32_t> prefix_ids_, suffix_ids_;
  int32_t bos_id_ = -1, eos_id_ = -1;
};

}  // namespace r1::tok
