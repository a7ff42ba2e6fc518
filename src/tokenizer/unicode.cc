// UTF-8 scanning, lossy repair with Rust's exact replacement rules, and NFC
// (decompose, canonical order, compose) over the generated tables in
// unicode_tables.inc.
#include "tokenizer/unicode.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace r1::tok {
namespace {

struct CccEntry {
  uint32_t cp;
  uint8_t ccc;
};
struct DecompEntry {
  uint32_t cp;
  uint16_t offset;
  uint8_t length;
};
struct ComposeEntry {
  uint32_t first, second, composite;
};
struct CpRange {
  uint32_t lo, hi;
};

#include "tokenizer/unicode_tables.inc"

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr uint32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

template <size_t N>
bool in_ranges(const CpRange (&table)[N], uint32_t cp) {
  auto it = std::upper_bound(std::begin(table), std::end(table), cp,
                             [](uint32_t v, const CpRange& r) { return v < r.lo; });
  if (it == std::begin(table)) return false;
  --it;
  return cp <= it->hi;
}

uint8_t combining_class(uint32_t cp) {
  if (cp < 0x300) return 0;
  auto it = std::lower_bound(std::begin(kCcc), std::end(kCcc), cp,
                             [](const CccEntry& e, uint32_t v) { return e.cp < v; });
  return (it != std::end(kCcc) && it->cp == cp) ? it->ccc : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  auto it = std::lower_bound(std::begin(kDecomp), std::end(kDecomp), cp,
                             [](const DecompEntry& e, uint32_t v) { return e.cp < v; });
  if (it == std::end(kDecomp) || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  out.insert(out.end(), kDecompData + it->offset, kDecompData + it->offset + it->length);
}

// Returns the primary composite of (a, b), or 0.
uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  auto it = std::lower_bound(std::begin(kCompose), std::end(kCompose), std::pair{a, b},
                             [](const ComposeEntry& e, const std::pair<uint32_t, uint32_t>& v) {
                               return e.first != v.first ? e.first < v.first : e.second < v.second;
                             });
  if (it != std::end(kCompose) && it->first == a && it->second == b) return it->composite;
  return 0;
}

// Byte ranges allowed for the second byte of a sequence led by `lead`.
bool second_byte_ok(uint8_t lead, uint8_t b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;
    case 0xED:
      return b >= 0x80 && b <= 0x9F;
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

int sequence_width(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Examines the sequence at s[i]. Returns its length when it is complete and
// valid; otherwise returns -(length of the maximal valid prefix, at least 1) and
// sets `truncated` when that prefix ends at the end of `s`.
int examine(std::string_view s, size_t i, bool& truncated) {
  truncated = false;
  auto lead = static_cast<uint8_t>(s[i]);
  int width = sequence_width(lead);
  if (width == 1) return 1;
  if (width == 0) return -1;
  for (int k = 1; k < width; ++k) {
    if (i + k >= s.size()) {
      truncated = true;
      return -k;
    }
    auto b = static_cast<uint8_t>(s[i + k]);
    bool ok = k == 1 ? second_byte_ok(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return -k;
  }
  return width;
}

}  // namespace

uint32_t next_code_point(std::string_view s, size_t& i) {
  auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  int width = sequence_width(b0);
  uint32_t cp = width == 2 ? (b0 & 0x1F) : width == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (int k = 1; k < width; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  i += width;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t valid_utf8_prefix(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (i + 8 <= s.size()) {  // skip ASCII eight bytes at a time
      uint64_t v;
      std::memcpy(&v, s.data() + i, 8);
      if ((v & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    bool truncated;
    int n = examine(s, i, truncated);
    if (n < 0) return i;
    i += n;
  }
  return i;
}

bool is_valid_utf8(std::string_view s) {
  return valid_utf8_prefix(s) == s.size();
}

size_t append_utf8_lossy(std::string& out, std::string_view s, bool final_chunk) {
  size_t i = 0;
  size_t run = 0;  // start of the pending run of valid bytes
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    bool truncated;
    int n = examine(s, i, truncated);
    if (n > 0) {
      i += n;
      continue;
    }
    out.append(s.substr(run, i - run));
    if (truncated && !final_chunk) return s.size() - i;
    out.append("\xEF\xBF\xBD");
    i += static_cast<size_t>(-n);
    run = i;
  }
  out.append(s.substr(run));
  return 0;
}

namespace {

// Full NFC of `s` (decompose, canonical order, compose), appended to `out`.
void nfc_full(std::string_view s, std::string& out) {
  thread_local std::vector<uint32_t> cps, res;
  cps.clear();
  for (size_t i = 0; i < s.size();) decompose(next_code_point(s, i), cps);
  // Canonical ordering: stable sort of each run of non-starters by class.
  for (size_t a = 0; a < cps.size();) {
    if (combining_class(cps[a]) == 0) {
      ++a;
      continue;
    }
    size_t b = a;
    while (b < cps.size() && combining_class(cps[b]) != 0) ++b;
    std::stable_sort(cps.begin() + a, cps.begin() + b, [](uint32_t x, uint32_t y) {
      return combining_class(x) < combining_class(y);
    });
    a = b;
  }
  // Canonical composition.
  res.clear();
  int64_t starter = -1;  // index in res of the last starter
  int last_ccc = -1;     // class of the last character kept after that starter
  for (uint32_t cp : cps) {
    int ccc = combining_class(cp);
    if (starter >= 0) {
      bool blocked = last_ccc != -1 && (last_ccc == 0 || last_ccc >= ccc);
      if (!blocked) {
        if (uint32_t c = compose_pair(res[starter], cp)) {
          res[starter] = c;
          continue;
        }
      }
    }
    if (ccc == 0) {
      starter = static_cast<int64_t>(res.size());
      last_ccc = -1;
    } else {
      last_ccc = ccc;
    }
    res.push_back(cp);
  }
  for (uint32_t cp : res) append_utf8(out, cp);
}

}  // namespace

bool nfc_normalize(std::string_view s, std::string& out) {
  // NFC only changes text around "unsafe" characters (those that may change,
  // combine with a neighbour or reorder); the characters outside kNfcUnsafe
  // (and everything below U+0300) are boundaries that nothing crosses. Only
  // the span from the last safe character before an unsafe run to the next
  // safe character is normalized; the rest is copied.
  size_t i = 0, last_safe = 0, copied = 0;
  bool changed = false;
  while (i < s.size()) {
    auto b = static_cast<uint8_t>(s[i]);
    if (b < 0xCC) {  // lead bytes below 0xCC encode code points below U+0300
      last_safe = i;
      i += b < 0x80 ? 1 : 2;
      continue;
    }
    size_t start = i;
    uint32_t cp = next_code_point(s, i);
    if (!in_ranges(kNfcUnsafe, cp)) {
      last_safe = start;
      continue;
    }
    // An unsafe run: extend to the next safe character.
    size_t end = i;
    while (end < s.size()) {
      auto lead = static_cast<uint8_t>(s[end]);
      if (lead < 0xCC) break;
      size_t k = end;
      if (!in_ranges(kNfcUnsafe, next_code_point(s, k))) break;
      end = k;
    }
    if (!changed) {
      out.clear();
      out.reserve(s.size() + 16);
      changed = true;
    }
    size_t seg = std::max(last_safe, copied);
    out.append(s.substr(copied, seg - copied));
    nfc_full(s.substr(seg, end - seg), out);
    copied = end;
    last_safe = end;
    i = end;
  }
  if (!changed) return false;
  out.append(s.substr(copied));
  return true;
}

bool is_whitespace(uint32_t cp) {
  switch (cp) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool is_word_char(uint32_t cp) {
  if (cp < 0x80)
    return (cp >= '0' && cp <= '9') || ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') || cp == '_';
  return in_ranges(kWordChar, cp);
}

uint8_t char_class(uint32_t cp) {
  if (cp >= 0x110000) return 0;
  return kClassStage2[static_cast<size_t>(kClassStage1[cp >> 8]) * 256 + (cp & 0xFF)];
}

const char* unicode_tables_version() {
  return kUnicodeVersion;
}

}  // namespace r1::tok
