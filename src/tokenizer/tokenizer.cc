// Tokenizer: loading tokenizer.json / tokenizer_config.json and the encode
// pipeline of `tokenizers` (added tokens on raw text, normalize, added tokens
// on normalized text, pre-tokenize, BPE, post-process) and decode.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tokenizer/bpe_model.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/unicode.h"

namespace r1::tok {

using nlohmann::json;

namespace {

constexpr uint8_t kKnown = 1, kSpecial = 2;

Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status(ErrorCode::kNotFound, "cannot open " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return Status(ErrorCode::kIo, "cannot read " + path);
  return ss.str();
}

// Collects the normalizers of `j` (nested Sequences flattened) into `nfc`.
Status parse_normalizer(const json& j, bool& nfc) {
  if (j.is_null()) return Status::ok();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    return Status(ErrorCode::kInvalidArgument,
                  "tokenizer.json: normalizer must be null or an object with a string 'type'");
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      return Status(ErrorCode::kInvalidArgument,
                    "tokenizer.json: normalizer Sequence lacks array 'normalizers'");
    for (const json& sub : j["normalizers"]) R1_RETURN_IF_ERROR(parse_normalizer(sub, nfc));
    return Status::ok();
  }
  if (type == "NFC") {
    nfc = true;
    return Status::ok();
  }
  return Status(ErrorCode::kUnsupported,
                "tokenizer.json: normalizer type '" + type + "' is not supported (NFC only)");
}

// The ids TemplateProcessing puts around a single sequence.
Status parse_post_processor(const json& j, const json& added_tokens, std::vector<int32_t>& prefix,
                            std::vector<int32_t>& suffix, bool& has_template) {
  if (j.is_null()) return Status::ok();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    return Status(ErrorCode::kInvalidArgument,
                  "tokenizer.json: post_processor must be null or an object with a string 'type'");
  const std::string type = j["type"].get<std::string>();
  if (type == "ByteLevel") return Status::ok();  // offsets only
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array())
      return Status(ErrorCode::kInvalidArgument,
                    "tokenizer.json: post_processor Sequence lacks array 'processors'");
    for (const json& sub : j["processors"])
      R1_RETURN_IF_ERROR(parse_post_processor(sub, added_tokens, prefix, suffix, has_template));
    return Status::ok();
  }
  if (type != "TemplateProcessing")
    return Status(ErrorCode::kUnsupported,
                  "tokenizer.json: post_processor type '" + type + "' is not supported");
  auto bad = [](const std::string& what) {
    return Status(ErrorCode::kInvalidArgument, "tokenizer.json: TemplateProcessing: " + what);
  };
  if (!j.contains("single") || !j["single"].is_array()) return bad("missing array 'single'");
  const json& specials = j.value("special_tokens", json::object());
  has_template = true;
  prefix.clear();
  suffix.clear();
  bool seen_sequence = false;
  for (const json& piece : j["single"]) {
    if (piece.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    if (!piece.contains("SpecialToken") || !piece["SpecialToken"].contains("id"))
      return bad("'single' pieces must be Sequence or SpecialToken");
    const std::string name = piece["SpecialToken"]["id"].get<std::string>();
    if (!specials.contains(name) || !specials[name].contains("ids") ||
        !specials[name]["ids"].is_array())
      return bad("special token '" + name + "' is not in 'special_tokens'");
    for (const json& id : specials[name]["ids"]) {
      if (!id.is_number_integer()) return bad("special token '" + name + "' has a non-integer id");
      (seen_sequence ? suffix : prefix).push_back(id.get<int32_t>());
    }
  }
  return Status::ok();
}

// bos_token / eos_token in tokenizer_config.json: a string, an AddedToken
// object with "content", or null.
std::string config_token(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return "";
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return "";
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

Result<std::shared_ptr<Tokenizer>> Tokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path tok_path = path;
  if (fs::is_directory(tok_path, ec)) tok_path /= "tokenizer.json";
  if (!fs::exists(tok_path, ec))
    return Status(ErrorCode::kNotFound, "tokenizer file not found: " + tok_path.string());
  R1_ASSIGN_OR_RETURN(std::string tok_json, read_file(tok_path.string()));
  std::string config_json;
  fs::path config_path = tok_path.parent_path() / "tokenizer_config.json";
  if (fs::exists(config_path, ec)) {
    R1_ASSIGN_OR_RETURN(config_json, read_file(config_path.string()));
  }
  return from_json(tok_json, config_json, tok_path.string());
}

Result<std::shared_ptr<Tokenizer>> Tokenizer::from_json(std::string_view tokenizer_json,
                                                        std::string_view config_json,
                                                        const std::string& origin) {
  auto with_origin = [&origin](const Status& s) {
    return Status(s.code(), origin + ": " + s.message());
  };
  json root, config;
  try {
    root = json::parse(tokenizer_json);
  } catch (const json::exception& e) {
    return Status(ErrorCode::kInvalidArgument,
                  origin + ": tokenizer.json is not valid JSON: " + e.what());
  }
  if (!config_json.empty()) {
    try {
      config = json::parse(config_json);
    } catch (const json::exception& e) {
      return Status(ErrorCode::kInvalidArgument,
                    origin + ": tokenizer_config.json is not valid JSON: " + e.what());
    }
  }
  auto tok = std::shared_ptr<Tokenizer>(new Tokenizer());
  try {
    if (!root.is_object())
      return with_origin(Status(ErrorCode::kInvalidArgument, "tokenizer.json: not an object"));
    if (!root.contains("model"))
      return with_origin(Status(ErrorCode::kInvalidArgument, "tokenizer.json: missing 'model'"));
    auto model = BpeModel::from_json(root["model"]);
    if (!model) return with_origin(model.status());
    tok->model_ = std::move(model).value();

    Status st = parse_normalizer(root.value("normalizer", json()), tok->nfc_);
    if (!st) return with_origin(st);
    auto pre = PreTokenizer::from_json(root.value("pre_tokenizer", json()));
    if (!pre) return with_origin(pre.status());
    tok->pre_tokenizer_ = std::move(pre).value();

    const json decoder = root.value("decoder", json());
    if (!decoder.is_object() || decoder.value("type", std::string()) != "ByteLevel")
      return with_origin(Status(
          ErrorCode::kUnsupported,
          "tokenizer.json: decoder must be ByteLevel, got " + decoder.dump().substr(0, 200)));

    // Ids: the model's vocab, then added tokens (which may reuse vocab ids).
    const auto& model_tokens = tok->model_->tokens();
    const json added = root.value("added_tokens", json::array());
    if (!added.is_array())
      return with_origin(
          Status(ErrorCode::kInvalidArgument, "tokenizer.json: 'added_tokens' is not an array"));
    size_t n = model_tokens.size();
    for (const json& a : added) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          !a.contains("content") || !a["content"].is_string())
        return with_origin(Status(ErrorCode::kInvalidArgument,
                                  "tokenizer.json: added token " + a.dump().substr(0, 200) +
                                      " needs an integer 'id' and a string 'content'"));
      int64_t id = a["id"].get<int64_t>();
      if (id < 0 || id > (1 << 24))
        return with_origin(
            Status(ErrorCode::kInvalidArgument,
                   "tokenizer.json: added token id " + std::to_string(id) + " is out of range"));
      n = std::max(n, static_cast<size_t>(id + 1));
    }
    tok->id_to_token_.assign(n, std::string());
    tok->id_bytes_.assign(n, std::string());
    tok->id_flags_.assign(n, 0);
    std::string bytes;
    for (size_t id = 0; id < model_tokens.size(); ++id) {
      if (model_tokens[id].empty() && tok->model_->token_to_id("") != static_cast<int32_t>(id))
        continue;
      tok->id_to_token_[id] = model_tokens[id];
      tok->id_flags_[id] = kKnown;
    }
    for (const json& a : added) {
      AddedToken t;
      t.id = a["id"].get<int32_t>();
      t.content = a["content"].get<std::string>();
      t.special = a.value("special", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.single_word = a.value("single_word", false);
      t.normalized = a.value("normalized", !t.special);
      if (!is_valid_utf8(t.content))
        return with_origin(Status(ErrorCode::kInvalidArgument,
                                  "tokenizer.json: added token content is not valid UTF-8"));
      std::string pattern = t.content;
      if (t.normalized && tok->nfc_) nfc_normalize(t.content, pattern);
      tok->id_to_token_[t.id] = t.content;
      tok->id_flags_[t.id] = kKnown | (t.special ? kSpecial : 0);
      tok->added_by_content_.push_back({t.content, t.id});
      tok->added_.add(t, std::move(pattern));
    }
    std::stable_sort(tok->added_by_content_.begin(), tok->added_by_content_.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    // What the ByteLevel decoder emits per token: the mapped bytes, or the
    // token's own UTF-8 when some character is outside the byte mapping.
    for (size_t id = 0; id < n; ++id) {
      if (!(tok->id_flags_[id] & kKnown)) continue;
      const std::string& s = tok->id_to_token_[id];
      tok->id_bytes_[id] = unicode_to_bytes(s, bytes) ? bytes : s;
    }

    // Special tokens added by add_special_tokens: the config's add_bos_token /
    // add_eos_token when it says (as transformers' Llama tokenizers do), else
    // the TemplateProcessing post-processor.
    tok->bos_id_ = tok->token_to_id(config_token(config, "bos_token"));
    tok->eos_id_ = tok->token_to_id(config_token(config, "eos_token"));
    bool has_template = false;
    std::vector<int32_t> prefix, suffix;
    st = parse_post_processor(root.value("post_processor", json()), added, prefix, suffix,
                              has_template);
    if (!st) return with_origin(st);
    bool config_says = config.is_object() &&
                       (config.contains("add_bos_token") || config.contains("add_eos_token"));
    if (config_says) {
      if (config.value("add_bos_token", false) && tok->bos_id_ >= 0)
        tok->prefix_ids_.push_back(tok->bos_id_);
      if (config.value("add_eos_token", false) && tok->eos_id_ >= 0)
        tok->suffix_ids_.push_back(tok->eos_id_);
    } else if (has_template) {
      tok->prefix_ids_ = prefix;
      tok->suffix_ids_ = suffix;
    }
    for (int32_t id : tok->prefix_ids_)
      if (!tok->is_known(id))
        return with_origin(Status(
            ErrorCode::kInvalidArgument,
            "post-processor special token id " + std::to_string(id) + " is not in the vocabulary"));
  } catch (const json::exception& e) {
    return with_origin(Status(ErrorCode::kInvalidArgument,
                              std::string("tokenizer.json: unexpected structure: ") + e.what()));
  }
  return tok;
}

void Tokenizer::encode_words(std::string_view text, std::vector<int32_t>& out) const {
  thread_local std::vector<Span> words;
  pre_tokenizer_->split(text, words);
  for (const Span& w : words) model_->encode_word(text.substr(w.begin, w.end - w.begin), out);
}

void Tokenizer::encode_segment(std::string_view segment, std::vector<int32_t>& out) const {
  thread_local std::string normalized;
  thread_local std::vector<TextPiece> pieces;
  std::string_view text = segment;
  if (nfc_ && nfc_normalize(segment, normalized)) text = normalized;
  if (!added_.has_tokens(true)) {
    encode_words(text, out);
    return;
  }
  pieces.clear();
  added_.split(text, true, pieces);
  for (const TextPiece& p : pieces) {
    if (p.id >= 0)
      out.push_back(p.id);
    else
      encode_words(text.substr(p.begin, p.end - p.begin), out);
  }
}

void Tokenizer::encode_into(std::string_view text, bool add_special_tokens,
                            std::vector<int32_t>& out) const {
  std::string repaired;
  if (!is_valid_utf8(text)) {
    append_utf8_lossy(repaired, text);
    text = repaired;
  }
  if (add_special_tokens) out.insert(out.end(), prefix_ids_.begin(), prefix_ids_.end());
  thread_local std::vector<TextPiece> pieces;  // encode_segment has its own
  pieces.clear();
  added_.split(text, false, pieces);
  for (const TextPiece& p : pieces) {
    if (p.id >= 0)
      out.push_back(p.id);
    else
      encode_segment(text.substr(p.begin, p.end - p.begin), out);
  }
  if (add_special_tokens) out.insert(out.end(), suffix_ids_.begin(), suffix_ids_.end());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  encode_into(text, add_special_tokens, out);
  return out;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(
    const std::vector<std::string_view>& texts, ThreadPool& pool, bool add_special_tokens) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  pool.parallel_for(static_cast<int64_t>(texts.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) encode_into(texts[i], add_special_tokens, out[i]);
  });
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (!is_known(id)) continue;
    if (skip_special_tokens && (id_flags_[id] & kSpecial)) continue;
    bytes += id_bytes_[id];
  }
  if (is_valid_utf8(bytes)) return bytes;
  std::string out;
  append_utf8_lossy(out, bytes);
  return out;
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  auto it = std::lower_bound(added_by_content_.begin(), added_by_content_.end(), token,
                             [](const auto& e, std::string_view t) { return e.first < t; });
  if (it != added_by_content_.end() && it->first == token) return it->second;
  return model_->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  return is_known(id) ? id_to_token_[id] : std::string();
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  return is_known(id) ? std::string_view(id_bytes_[id]) : std::string_view();
}

bool Tokenizer::is_known(int32_t id) const {
  return id >= 0 && id < vocab_size() && (id_flags_[id] & kKnown);
}

bool Tokenizer::is_special(int32_t id) const {
  return is_known(id) && (id_flags_[id] & kSpecial);
}

}  // namespace r1::tok
