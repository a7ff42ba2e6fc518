// PreTokenizer and Regex: PCRE2 matching (one JIT stack and match data per
// thread) and the split behaviors of `tokenizers`' NormalizedString::split.
#include "tokenizer/pre_tokenizer.h"

#include "tokenizer/fast_split.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>

namespace r1::tok {

using nlohmann::json;

namespace {

// GPT-2's pattern, used by ByteLevel when use_regex is true.
constexpr char kByteLevelPattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Per-thread PCRE2 match state.
struct MatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

}  // namespace

Result<std::unique_ptr<Regex>> Regex::compile(const std::string& pattern, bool literal,
                                              bool allow_fast) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  std::string source = pattern;
  if (literal) {  // escape ASCII punctuation (PCRE2_LITERAL does not combine with UCP)
    source.clear();
    for (char c : pattern) {
      auto u = static_cast<unsigned char>(c);
      if (u < 0x80 && !std::isalnum(u)) source.push_back('\\');
      source.push_back(c);
    }
  }
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    return make_error(ErrorCode::kInvalidArgument,
                      "tokenizer.json: cannot compile pre-tokenizer regex '{}' at offset {}: {}",
                      pattern, static_cast<size_t>(err_offset), reinterpret_cast<char*>(msg));
  }
  auto r = std::unique_ptr<Regex>(new Regex());
  r->code_ = code;
  r->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  r->pattern_ = pattern;
  if (allow_fast && !literal) r->fast_ = fast_matcher_for(pattern);
  return r;
}

Regex::~Regex() {
  pcre2_code_free(static_cast<pcre2_code*>(code_));
}

void Regex::find_all(std::string_view text, uint32_t base, std::vector<Span>& out) const {
  if (fast_ != nullptr) {
    fast_(text, base, out);
    return;
  }
  MatchState& st = match_state();
  auto* code = static_cast<pcre2_code*>(code_);
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  PCRE2_SIZE pos = 0;
  PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
  while (pos < text.size()) {
    int rc = jit_ ? pcre2_jit_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, st.data,
                                    st.context)
                  : pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, st.data,
                                st.context);
    if (rc < 0) break;  // no match (or a resource limit: the rest stays unmatched)
    PCRE2_SIZE b = ov[0], e = ov[1];
    if (e > b) {
      out.push_back({static_cast<uint32_t>(base + b), static_cast<uint32_t>(base + e)});
      pos = e;
    } else {  // an empty match: step over one character
      pos = b + 1;
      while (pos < text.size() && (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80) ++pos;
    }
  }
}

Result<std::unique_ptr<PreTokenizer>> PreTokenizer::from_json(const json& j) {
  auto p = std::unique_ptr<PreTokenizer>(new PreTokenizer());
  if (!j.is_null()) R1_RETURN_IF_ERROR(p->add_from_json(j));
  return p;
}

Status PreTokenizer::add_from_json(const json& j) {
  auto bad = [&](const std::string& what) {
    return Status(ErrorCode::kInvalidArgument,
                  "tokenizer.json: pre_tokenizer " + j.dump().substr(0, 200) + ": " + what);
  };
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    return bad("expected an object with a string 'type'");
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      return bad("missing array 'pretokenizers'");
    for (const json& sub : j["pretokenizers"]) R1_RETURN_IF_ERROR(add_from_json(sub));
    return Status::ok();
  }
  if (type == "ByteLevel") {
    if (j.value("add_prefix_space", false))
      return Status(ErrorCode::kUnsupported,
                    "tokenizer.json: pre_tokenizer ByteLevel with add_prefix_space=true is not "
                    "supported");
    // The byte mapping itself is folded into the BPE model (words stay raw bytes).
    if (j.value("use_regex", true)) {
      Step step;
      R1_ASSIGN_OR_RETURN(step.regex, Regex::compile(kByteLevelPattern));
      steps_.push_back(std::move(step));
    }
    return Status::ok();
  }
  if (type == "Split") {
    Step step;
    if (!j.contains("pattern") || !j["pattern"].is_object()) return bad("missing object 'pattern'");
    const json& pat = j["pattern"];
    if (pat.contains("Regex") && pat["Regex"].is_string()) {
      R1_ASSIGN_OR_RETURN(step.regex, Regex::compile(pat["Regex"].get<std::string>()));
    } else if (pat.contains("String") && pat["String"].is_string()) {
      R1_ASSIGN_OR_RETURN(step.regex, Regex::compile(pat["String"].get<std::string>(), true));
    } else {
      return bad("pattern must be {\"Regex\": ...} or {\"String\": ...}");
    }
    const std::string behavior = j.value("behavior", std::string("Isolated"));
    if (behavior == "Isolated")
      step.behavior = Behavior::kIsolated;
    else if (behavior == "Removed")
      step.behavior = Behavior::kRemoved;
    else if (behavior == "MergedWithPrevious")
      step.behavior = Behavior::kMergedWithPrevious;
    else if (behavior == "MergedWithNext")
      step.behavior = Behavior::kMergedWithNext;
    else if (behavior == "Contiguous")
      step.behavior = Behavior::kContiguous;
    else
      return bad("unknown behavior '" + behavior + "'");
    step.invert = j.value("invert", false);
    steps_.push_back(std::move(step));
    return Status::ok();
  }
  return Status(ErrorCode::kUnsupported,
                "tokenizer.json: pre_tokenizer type '" + type + "' is not supported");
}

void PreTokenizer::apply(const Step& step, std::string_view text, const std::vector<Span>& in,
                         std::vector<Span>& out) const {
  thread_local std::vector<Span> matches;
  thread_local std::vector<std::pair<Span, bool>> pieces;
  for (const Span& s : in) {
    matches.clear();
    step.regex->find_all(text.substr(s.begin, s.end - s.begin), s.begin, matches);
    // (range, is_match) covering s, as `tokenizers`' Pattern::find_matches.
    pieces.clear();
    uint32_t prev = s.begin;
    for (const Span& m : matches) {
      if (m.begin != prev) pieces.push_back({{prev, m.begin}, step.invert});
      pieces.push_back({m, !step.invert});
      prev = m.end;
    }
    if (prev != s.end) pieces.push_back({{prev, s.end}, step.invert});
    size_t first_out = out.size();
    switch (step.behavior) {
      case Behavior::kIsolated:
        for (auto& [sp, m] : pieces) out.push_back(sp);
        break;
      case Behavior::kRemoved:
        for (auto& [sp, m] : pieces)
          if (!m) out.push_back(sp);
        break;
      case Behavior::kMergedWithPrevious: {
        bool prev_match = false;
        for (auto& [sp, m] : pieces) {
          if (m && !prev_match && out.size() > first_out)
            out.back().end = sp.end;
          else
            out.push_back(sp);
          prev_match = m;
        }
        break;
      }
      case Behavior::kMergedWithNext: {
        bool prev_match = false;  // walking right to left
        for (size_t k = pieces.size(); k-- > 0;) {
          auto& [sp, m] = pieces[k];
          if (m && !prev_match && out.size() > first_out)
            out.back().begin = sp.begin;
          else
            out.push_back(sp);
          prev_match = m;
        }
        std::reverse(out.begin() + static_cast<ptrdiff_t>(first_out), out.end());
        break;
      }
      case Behavior::kContiguous: {
        bool prev_match = false;
        for (auto& [sp, m] : pieces) {
          if (m && prev_match && out.size() > first_out)
            out.back().end = sp.end;
          else
            out.push_back(sp);
          prev_match = m;
        }
        break;
      }
    }
    // Empty pieces are dropped, as PreTokenizedString::split does.
    size_t w = first_out;
    for (size_t r = first_out; r < out.size(); ++r)
      if (out[r].end > out[r].begin) out[w++] = out[r];
    out.resize(w);
  }
}

void PreTokenizer::split(std::string_view text, std::vector<Span>& out) const {
  out.clear();
  if (text.empty()) return;
  out.push_back({0, static_cast<uint32_t>(text.size())});
  thread_local std::vector<Span> scratch;
  for (const Step& step : steps_) {
    scratch.clear();
    apply(step, text, out, scratch);
    out.swap(scratch);
  }
}

}  // namespace r1::tok
