// PreTokenizer: splits normalized text into words before BPE, as the
// "pre_tokenizer" of tokenizer.json says (Sequence, Split with a regex or a
// string and any split behavior, ByteLevel with or without its GPT-2 regex).
// Regexes run on PCRE2 with JIT in UTF + UCP mode, the same semantics as the
// Oniguruma engine that `tokenizers` uses for these patterns.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace r1::tok {

// A byte range [begin, end) of the text being split.
struct Span {
  uint32_t begin = 0;
  uint32_t end = 0;
};

// A compiled regex (PCRE2, UTF + UCP, JIT when available). Thread-safe.
class Regex {
 public:
  // With `allow_fast`, the patterns of fast_split.h use their hand-written
  // matcher (same matches) instead of PCRE2.
  static Result<std::unique_ptr<Regex>> compile(const std::string& pattern, bool literal = false,
                                                bool allow_fast = true);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-empty, non-overlapping matches in `text` (valid UTF-8), left to right,
  // each as a byte range offset by `base`.
  void find_all(std::string_view text, uint32_t base, std::vector<Span>& out) const;
  const std::string& pattern() const { return pattern_; }
  bool uses_fast_matcher() const { return fast_ != nullptr; }

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
  void (*fast_)(std::string_view, uint32_t, std::vector<Span>&) = nullptr;
  std::string pattern_;
};

class PreTokenizer {
 public:
  enum class Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

  // `j` is the "pre_tokenizer" value of tokenizer.json (null: the whole text is one word).
  static Result<std::unique_ptr<PreTokenizer>> from_json(const nlohmann::json& j);

  // Splits `text` (valid UTF-8) into non-empty words, written to `out` (cleared first).
  void split(std::string_view text, std::vector<Span>& out) const;

 private:
  struct Step {
    std::unique_ptr<Regex> regex;
    Behavior behavior = Behavior::kIsolated;
    bool invert = false;
  };
  Status add_from_json(const nlohmann::json& j);
  void apply(const Step& step, std::string_view text, const std::vector<Span>& in,
             std::vector<Span>& out) const;

  std::vector<Step> steps_;
};

}  // namespace r1::tok
