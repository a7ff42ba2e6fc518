// UTF-8 and Unicode helpers for the tokenizer: decoding and encoding code
// points, validation and Rust-compatible lossy repair (String::from_utf8_lossy),
// NFC normalization, and the character classes that added-token matching uses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace r1::tok {

// Decodes the code point at s[i] (which must start a valid sequence), advancing i.
uint32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, uint32_t cp);

// Length of the longest prefix of `s` that is complete, valid UTF-8.
size_t valid_utf8_prefix(std::string_view s);
bool is_valid_utf8(std::string_view s);

// Appends the lossy repair of `s` to `out`, exactly as Rust's
// String::from_utf8_lossy: each maximal ill-formed subpart becomes U+FFFD.
// With `final_chunk` false, an incomplete but so far valid sequence at the end
// is left alone and its length returned (the caller keeps those bytes for the
// next chunk); with true it is replaced too and 0 is returned.
size_t append_utf8_lossy(std::string& out, std::string_view s, bool final_chunk = true);

// Unicode NFC. Returns false (and leaves `out` untouched) when `s` is already
// in NFC by the quick check, so callers can keep using `s`.
bool nfc_normalize(std::string_view s, std::string& out);

// Rust's char::is_whitespace (the White_Space property).
bool is_whitespace(uint32_t cp);
// Rust regex's \w (Alphabetic, marks, Nd, Pc, joiners), approximated by
// general categories: what single_word added tokens treat as a word character.
bool is_word_char(uint32_t cp);

// Regex character classes of a code point (bit set), as PCRE2 in UTF + UCP
// mode defines \p{L}, \p{M}, \p{N}, \p{P}, \p{S} and \s.
enum CharClass : uint8_t {
  kClassL = 1,
  kClassM = 2,
  kClassN = 4,
  kClassP = 8,
  kClassS = 16,
  kClassSpace = 32,
};
uint8_t char_class(uint32_t cp);

const char* unicode_tables_version();

}  // namespace r1::tok
