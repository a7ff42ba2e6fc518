// Fast matchers: each alternative of the known patterns written out as the
// backtracking regex engine would resolve it (leftmost start, first
// alternative that matches, greedy runs, one step back for \s+(?!\S)).
#include "tokenizer/fast_split.h"

#include "tokenizer/unicode.h"

namespace r1::tok {
namespace {

constexpr char kDeepSeekDigits[] = "\\p{N}{1,3}";
constexpr char kDeepSeekCjk[] = "[一-龥぀-ゟ゠-ヿ]+";
constexpr char kDeepSeekMain[] =
    "[!\"#$%&'()*+,\\-./"
    ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
constexpr char kQwen[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr char kLlama3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// The code point at s[i] (valid UTF-8) and its length.
inline uint32_t decode_at(std::string_view s, size_t i, size_t& len) {
  auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    len = 1;
    return b0;
  }
  if (b0 < 0xE0) {
    len = 2;
    return ((b0 & 0x1F) << 6) | (static_cast<uint8_t>(s[i + 1]) & 0x3F);
  }
  if (b0 < 0xF0) {
    len = 3;
    return ((b0 & 0x0F) << 12) | ((static_cast<uint8_t>(s[i + 1]) & 0x3F) << 6) |
           (static_cast<uint8_t>(s[i + 2]) & 0x3F);
  }
  len = 4;
  return ((b0 & 0x07) << 18) | ((static_cast<uint8_t>(s[i + 1]) & 0x3F) << 12) |
         ((static_cast<uint8_t>(s[i + 2]) & 0x3F) << 6) | (static_cast<uint8_t>(s[i + 3]) & 0x3F);
}

// Classes of ASCII characters, looked up without the Unicode tables.
struct AsciiClasses {
  uint8_t c[128];
  constexpr AsciiClasses() : c() {
    for (int i = 0; i < 128; ++i) {
      uint8_t f = 0;
      if ((i >= 'a' && i <= 'z') || (i >= 'A' && i <= 'Z'))
        f = kClassL;
      else if (i >= '0' && i <= '9')
        f = kClassN;
      else if (i == '$' || i == '+' || i == '<' || i == '=' || i == '>' || i == '^' || i == '`' ||
               i == '|' || i == '~')
        f = kClassS;
      else if (i > 0x20 && i < 0x7F)
        f = kClassP;
      if ((i >= 0x09 && i <= 0x0D) || i == 0x20) f = kClassSpace;
      c[i] = f;
    }
  }
};
constexpr AsciiClasses kAscii;

inline uint8_t class_at(std::string_view s, size_t i, size_t& len, uint32_t& cp) {
  auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    len = 1;
    cp = b0;
    return kAscii.c[b0];
  }
  cp = decode_at(s, i, len);
  return char_class(cp);
}

// Length of the run of characters from i whose class intersects `mask`.
inline size_t run_of(std::string_view s, size_t i, uint8_t mask) {
  size_t j = i, len;
  uint32_t cp;
  while (j < s.size() && (class_at(s, j, len, cp) & mask)) j += len;
  return j - i;
}

// Length of the run of characters from i whose class has no bit of `mask`.
inline size_t run_without(std::string_view s, size_t i, uint8_t mask) {
  size_t j = i, len;
  uint32_t cp;
  while (j < s.size() && !(class_at(s, j, len, cp) & mask)) j += len;
  return j - i;
}

inline size_t run_crlf(std::string_view s, size_t i) {
  size_t j = i;
  while (j < s.size() && (s[j] == '\r' || s[j] == '\n')) ++j;
  return j - i;
}

// \s*[\r\n]+|\s+(?!\S)|\s+ at i.
size_t match_space(std::string_view s, size_t i) {
  size_t e = i, last_crlf_end = 0, last_start = i, len;
  uint32_t cp;
  while (e < s.size() && (class_at(s, e, len, cp) & kClassSpace)) {
    if (cp == '\r' || cp == '\n') last_crlf_end = e + len;
    last_start = e;
    e += len;
  }
  if (e == i) return 0;
  if (last_crlf_end) return last_crlf_end - i;  // \s*[\r\n]+ (backtracked to the last CR/LF)
  if (e == s.size()) return e - i;              // \s+(?!\S) at the end
  if (last_start > i) return last_start - i;    // \s+(?!\S), one character given back
  return e - i;                                 // \s+
}

size_t match_deepseek_main(std::string_view s, size_t i) {
  size_t len0;
  uint32_t c0;
  uint8_t k0 = class_at(s, i, len0, c0);
  // [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+
  if (c0 < 0x80 && (k0 & (kClassP | kClassS))) {
    size_t j = i + 1;
    while (j < s.size() && ((s[j] | 0x20) >= 'a' && (s[j] | 0x20) <= 'z')) ++j;
    if (j > i + 1) return j - i;
  }
  // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
  if (c0 != '\r' && c0 != '\n' && !(k0 & (kClassL | kClassP | kClassS))) {
    size_t r = run_of(s, i + len0, kClassL | kClassM);
    if (r > 0) return len0 + r;
  }
  if (k0 & (kClassL | kClassM)) return run_of(s, i, kClassL | kClassM);
  //  ?[\p{P}\p{S}]+[\r\n]*
  size_t j = i;
  if (c0 == ' ') ++j;
  size_t r = j < s.size() ? run_of(s, j, kClassP | kClassS) : 0;
  if (r > 0) return j + r + run_crlf(s, j + r) - i;
  if (k0 & kClassSpace) return match_space(s, i);
  return 0;
}

// 's|'t|'re|'ve|'m|'ll|'d, case-insensitive as PCRE2 folds (s also matches ſ).
size_t match_contraction(std::string_view s, size_t i) {
  if (s[i] != '\'' || i + 1 >= s.size()) return 0;
  auto lower = [&](size_t k) { return k < s.size() ? static_cast<char>(s[k] | 0x20) : '\0'; };
  auto b = static_cast<uint8_t>(s[i + 1]);
  if (b >= 0x80) {
    if (b == 0xC5 && i + 2 < s.size() && static_cast<uint8_t>(s[i + 2]) == 0xBF) return 3;  // ſ
    return 0;
  }
  char c = lower(i + 1);
  if (c == 's' || c == 't' || c == 'm' || c == 'd') return 2;
  char c2 = lower(i + 2);
  if ((c == 'r' && c2 == 'e') || (c == 'v' && c2 == 'e') || (c == 'l' && c2 == 'l')) return 3;
  return 0;
}

template <int kMaxDigits>
size_t match_llama(std::string_view s, size_t i) {
  if (size_t m = match_contraction(s, i)) return m;
  size_t len0;
  uint32_t c0;
  uint8_t k0 = class_at(s, i, len0, c0);
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (c0 != '\r' && c0 != '\n' && !(k0 & (kClassL | kClassN))) {
    size_t r = run_of(s, i + len0, kClassL);
    if (r > 0) return len0 + r;
  }
  if (k0 & kClassL) return run_of(s, i, kClassL);
  // \p{N}{1,k}
  if (k0 & kClassN) {
    size_t j = i + len0, len;
    uint32_t cp;
    for (int n = 1; n < kMaxDigits && j < s.size() && (class_at(s, j, len, cp) & kClassN); ++n)
      j += len;
    return j - i;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  constexpr uint8_t kNotOther = kClassSpace | kClassL | kClassN;
  size_t j = i;
  if (c0 == ' ') ++j;
  size_t r = j < s.size() ? run_without(s, j, kNotOther) : 0;
  if (r > 0) return j + r + run_crlf(s, j + r) - i;
  if (k0 & kClassSpace) return match_space(s, i);
  return 0;
}

template <size_t (*kMatch)(std::string_view, size_t)>
void find_all_with(std::string_view s, uint32_t base, std::vector<Span>& out) {
  size_t i = 0, len;
  uint32_t cp;
  while (i < s.size()) {
    if (size_t m = kMatch(s, i)) {
      out.push_back({static_cast<uint32_t>(base + i), static_cast<uint32_t>(base + i + m)});
      i += m;
    } else {
      class_at(s, i, len, cp);
      i += len;
    }
  }
}

void find_deepseek_digits(std::string_view s, uint32_t base, std::vector<Span>& out) {
  size_t i = 0, len;
  uint32_t cp;
  while (i < s.size()) {
    auto b = static_cast<uint8_t>(s[i]);
    if (b < 0x80 && (b < '0' || b > '9')) {
      ++i;
      continue;
    }
    if (!(class_at(s, i, len, cp) & kClassN)) {
      i += len;
      continue;
    }
    size_t j = i + len;
    for (int n = 1; n < 3 && j < s.size() && (class_at(s, j, len, cp) & kClassN); ++n) j += len;
    out.push_back({static_cast<uint32_t>(base + i), static_cast<uint32_t>(base + j)});
    i = j;
  }
}

inline bool is_cjk_kana(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x30FF);
}

void find_deepseek_cjk(std::string_view s, uint32_t base, std::vector<Span>& out) {
  size_t i = 0, len;
  while (i < s.size()) {
    auto b = static_cast<uint8_t>(s[i]);
    if (b < 0xE3 || b > 0xE9) {  // CJK and kana are 3-byte sequences led by E3..E9
      i += b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
      continue;
    }
    if (!is_cjk_kana(decode_at(s, i, len))) {
      i += len;
      continue;
    }
    size_t j = i + len;
    while (j < s.size() && is_cjk_kana(decode_at(s, j, len))) j += len;
    out.push_back({static_cast<uint32_t>(base + i), static_cast<uint32_t>(base + j)});
    i = j;
  }
}

}  // namespace

FastFindAll fast_matcher_for(std::string_view pattern) {
  if (pattern == kDeepSeekMain) return find_all_with<match_deepseek_main>;
  if (pattern == kDeepSeekDigits) return find_deepseek_digits;
  if (pattern == kDeepSeekCjk) return find_deepseek_cjk;
  if (pattern == kLlama3) return find_all_with<match_llama<3>>;
  if (pattern == kQwen) return find_all_with<match_llama<1>>;
  return nullptr;
}

}  // namespace r1::tok
