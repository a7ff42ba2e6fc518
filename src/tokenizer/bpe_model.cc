// BpeModel: loading vocab and merges from tokenizer.json, the rank-ordered
// merge loop (the same priority order as `tokenizers`' Word::merge_all) and the
// sharded word cache.
#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <atomic>
#include <cstring>

namespace r1::tok {

using nlohmann::json;

const std::array<std::string, 256>& byte_to_unicode() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    std::array<bool, 256> printable{};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      uint32_t cp = printable[b] ? static_cast<uint32_t>(b) : 256u + n++;
      std::string s;
      if (cp < 0x80) {
        s.push_back(static_cast<char>(cp));
      } else {
        s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
      t[b] = s;
    }
    return t;
  }();
  return table;
}

bool unicode_to_bytes(std::string_view token, std::string& bytes) {
  // Code points 0..0x143 are the whole image of the mapping.
  static const std::array<int16_t, 0x144> inverse = [] {
    std::array<int16_t, 0x144> inv;
    inv.fill(-1);
    const auto& fwd = byte_to_unicode();
    for (int b = 0; b < 256; ++b) {
      const std::string& s = fwd[b];
      uint32_t cp = s.size() == 1 ? static_cast<uint8_t>(s[0])
                                  : ((static_cast<uint8_t>(s[0]) & 0x1F) << 6) |
                                        (static_cast<uint8_t>(s[1]) & 0x3F);
      inv[cp] = static_cast<int16_t>(b);
    }
    return inv;
  }();
  bytes.clear();
  for (size_t i = 0; i < token.size();) {
    auto b0 = static_cast<uint8_t>(token[i]);
    uint32_t cp;
    if (b0 < 0x80) {
      cp = b0;
      i += 1;
    } else if ((b0 & 0xE0) == 0xC0 && i + 1 < token.size()) {
      cp = ((b0 & 0x1F) << 6) | (static_cast<uint8_t>(token[i + 1]) & 0x3F);
      i += 2;
    } else {
      return false;
    }
    if (cp >= inverse.size() || inverse[cp] < 0) return false;
    bytes.push_back(static_cast<char>(inverse[cp]));
  }
  return true;
}

uint64_t hash_bytes(std::string_view s) {
  // 8 bytes at a time, multiply-xorshift mixing; good enough for hash tables.
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t h = 0xCBF29CE484222325ull ^ (s.size() * kMul);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t v;
    std::memcpy(&v, s.data() + i, 8);
    h = (h ^ v) * kMul;
    h ^= h >> 29;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, s.data() + i, s.size() - i);
  h = (h ^ tail) * kMul;
  h ^= h >> 32;
  h *= 0xD6E8FEB86659FD93ull;
  h ^= h >> 32;
  return h;
}

namespace {
uint64_t mix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xFF51AFD7ED558CCDull;
  k ^= k >> 33;
  return k;
}
std::atomic<uint64_t> next_model_serial{1};
}  // namespace

// Word -> ids cache of one thread for one model: an open-addressing table of
// hashes over two arenas (word bytes, ids). No locks (each thread has its
// own) and no allocation per entry; bounded, it starts over when full.
class BpeModel::WordCache {
 public:
  WordCache() : slots_(kSlots) {}

  bool find(std::string_view word, uint64_t h, std::vector<int32_t>& out) const {
    for (uint64_t i = h & (kSlots - 1);; i = (i + 1) & (kSlots - 1)) {
      const Slot& s = slots_[i];
      if (s.hash == 0) return false;
      if (s.hash == h && s.key_len == word.size() &&
          std::memcmp(keys_.data() + s.key_off, word.data(), word.size()) == 0) {
        out.insert(out.end(), ids_.begin() + s.ids_off, ids_.begin() + s.ids_off + s.ids_len);
        return true;
      }
    }
  }

  void insert(std::string_view word, uint64_t h, const int32_t* ids, size_t n) {
    if (used_ * 2 >= kSlots || keys_.size() + word.size() > kMaxArena ||
        (ids_.size() + n) * sizeof(int32_t) > kMaxArena) {
      std::fill(slots_.begin(), slots_.end(), Slot{});
      keys_.clear();
      ids_.clear();
      used_ = 0;
      if (word.size() > kMaxArena || n * sizeof(int32_t) > kMaxArena) return;
    }
    uint64_t i = h & (kSlots - 1);
    while (slots_[i].hash != 0) i = (i + 1) & (kSlots - 1);
    slots_[i] = {h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(word.size()),
                 static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(n)};
    keys_.append(word);
    ids_.insert(ids_.end(), ids, ids + n);
    ++used_;
  }

 private:
  static constexpr size_t kSlots = 1 << 15;
  static constexpr size_t kMaxArena = 2 << 20;  // bytes per arena
  struct Slot {
    uint64_t hash = 0;  // 0: empty (hashes are forced non-zero)
    uint32_t key_off = 0, key_len = 0, ids_off = 0, ids_len = 0;
  };
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t used_ = 0;
};

BpeModel::WordCache& BpeModel::thread_cache() const {
  // A thread keeps caches for the few models it used last (usually one).
  struct Entry {
    uint64_t serial = 0;
    std::unique_ptr<WordCache> cache;
  };
  thread_local std::array<Entry, 4> entries;
  thread_local size_t next_victim = 0;
  for (Entry& e : entries)
    if (e.serial == serial_) return *e.cache;
  Entry& e = entries[next_victim++ % entries.size()];
  e.serial = serial_;
  e.cache = std::make_unique<WordCache>();
  return *e.cache;
}

void BpeModel::MergeTable::init(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  keys.assign(cap, kEmptyKey);
  values.assign(cap, MergeValue{0, 0});
  mask = cap - 1;
}

void BpeModel::MergeTable::insert(uint64_t key, MergeValue v) {
  for (uint64_t i = mix64(key) & mask;; i = (i + 1) & mask) {
    if (keys[i] == kEmptyKey || keys[i] == key) {
      keys[i] = key;
      values[i] = v;  // a later duplicate wins, as in `tokenizers`
      return;
    }
  }
}

const BpeModel::MergeValue* BpeModel::MergeTable::find(uint64_t key) const {
  for (uint64_t i = mix64(key) & mask;; i = (i + 1) & mask) {
    if (keys[i] == key) return &values[i];
    if (keys[i] == kEmptyKey) return nullptr;
  }
}

Result<std::unique_ptr<BpeModel>> BpeModel::from_json(const json& model) {
  auto bad = [](const std::string& what) {
    return Status(ErrorCode::kInvalidArgument, "tokenizer.json: model: " + what);
  };
  if (!model.is_object()) return bad("expected an object");
  if (model.contains("type") && model["type"] != "BPE")
    return Status(ErrorCode::kUnsupported, "tokenizer.json: model.type is " + model["type"].dump() +
                                               ", only BPE is supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null() &&
        !(model[key].is_string() && model[key].get<std::string>().empty()))
      return Status(ErrorCode::kUnsupported,
                    std::string("tokenizer.json: model.") + key +
                        " is set; only byte-level BPE without it is supported");
  }
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"] != 0.0)
    return Status(ErrorCode::kUnsupported, "tokenizer.json: model.dropout is not supported");
  if (!model.contains("vocab") || !model["vocab"].is_object()) return bad("missing object 'vocab'");
  if (!model.contains("merges") || !model["merges"].is_array())
    return bad("missing array 'merges'");

  auto m = std::unique_ptr<BpeModel>(new BpeModel());
  m->ignore_merges_ = model.value("ignore_merges", false);
  const json& vocab = model["vocab"];
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) return bad("vocab['" + it.key() + "'] is not an integer");
    int64_t id = it.value().get<int64_t>();
    if (id < 0 || id > (1 << 24)) return bad("vocab['" + it.key() + "'] has id out of range");
    max_id = std::max(max_id, id);
  }
  m->tokens_.assign(static_cast<size_t>(max_id + 1), std::string());
  m->token_ids_.reserve(vocab.size());
  m->byte_ids_.reserve(vocab.size());
  std::string bytes;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    auto id = static_cast<int32_t>(it.value().get<int64_t>());
    m->tokens_[id] = it.key();
    m->token_ids_[it.key()] = id;
    if (unicode_to_bytes(it.key(), bytes)) m->byte_ids_.emplace(bytes, id);
  }
  const auto& b2u = byte_to_unicode();
  for (int b = 0; b < 256; ++b) {
    auto it = m->token_ids_.find(b2u[b]);
    if (it == m->token_ids_.end())
      return Status(ErrorCode::kUnsupported,
                    "tokenizer.json: model.vocab lacks the byte-level token for byte " +
                        std::to_string(b) + "; only byte-level BPE is supported");
    m->byte_token_[b] = it->second;
  }

  const json& merges = model["merges"];
  m->merges_.init(merges.size());
  std::string left, right;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& mj = merges[rank];
    if (mj.is_string()) {
      const std::string& s = mj.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        return bad("merges[" + std::to_string(rank) + "] '" + s + "' is not two tokens");
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else if (mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string()) {
      left = mj[0].get<std::string>();
      right = mj[1].get<std::string>();
    } else {
      return bad("merges[" + std::to_string(rank) + "] is neither \"a b\" nor [\"a\", \"b\"]");
    }
    auto a = m->token_ids_.find(left), b = m->token_ids_.find(right),
         c = m->token_ids_.find(left + right);
    if (a == m->token_ids_.end() || b == m->token_ids_.end() || c == m->token_ids_.end())
      return bad("merges[" + std::to_string(rank) + "] ('" + left + "', '" + right +
                 "') uses a token that is not in the vocab");
    m->merges_.insert(static_cast<uint64_t>(a->second) << 32 | static_cast<uint32_t>(b->second),
                      MergeValue{static_cast<int32_t>(rank), c->second});
  }
  m->serial_ = next_model_serial.fetch_add(1);
  return m;
}

int32_t BpeModel::token_to_id(std::string_view token) const {
  auto it = token_ids_.find(token);
  return it == token_ids_.end() ? -1 : it->second;
}

int32_t BpeModel::bytes_to_id(std::string_view bytes) const {
  auto it = byte_ids_.find(bytes);
  return it == byte_ids_.end() ? -1 : it->second;
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    if (int32_t id = bytes_to_id(word); id >= 0) {
      out.push_back(id);
      return;
    }
  }
  struct Symbol {
    int32_t id, prev, next;
    bool alive;
  };
  struct Candidate {
    int32_t rank, pos, new_id;
    // Lowest rank first, then leftmost: a min-heap through std::*_heap.
    bool operator<(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  const int32_t n = static_cast<int32_t>(word.size());
  symbols.resize(n);
  heap.clear();
  for (int32_t i = 0; i < n; ++i)
    symbols[i] = {byte_token_[static_cast<uint8_t>(word[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  auto pair_key = [](int32_t a, int32_t b) {
    return static_cast<uint64_t>(a) << 32 | static_cast<uint32_t>(b);
  };
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const MergeValue* mv = merges_.find(pair_key(symbols[i].id, symbols[i + 1].id)))
      heap.push_back({mv->rank, i, mv->new_id});
  }
  std::make_heap(heap.begin(), heap.end());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    Candidate top = heap.back();
    heap.pop_back();
    Symbol& cur = symbols[top.pos];
    if (!cur.alive || cur.next < 0) continue;
    Symbol& right = symbols[cur.next];
    const MergeValue* mv = merges_.find(pair_key(cur.id, right.id));
    if (mv == nullptr || mv->new_id != top.new_id) continue;  // stale entry
    cur.id = top.new_id;
    right.alive = false;
    cur.next = right.next;
    if (cur.next >= 0) symbols[cur.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const MergeValue* p = merges_.find(pair_key(symbols[cur.prev].id, cur.id))) {
        heap.push_back({p->rank, cur.prev, p->new_id});
        std::push_heap(heap.begin(), heap.end());
      }
    }
    if (cur.next >= 0) {
      if (const MergeValue* p = merges_.find(pair_key(cur.id, symbols[cur.next].id))) {
        heap.push_back({p->rank, top.pos, p->new_id});
        std::push_heap(heap.begin(), heap.end());
      }
    }
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (word.size() == 1) {
    out.push_back(byte_token_[static_cast<uint8_t>(word[0])]);
    return;
  }
  constexpr size_t kMaxCachedWord = 64 * 1024;
  if (word.size() > kMaxCachedWord) {
    merge_word(word, out);
    return;
  }
  uint64_t h = hash_bytes(word) | 1;
  WordCache& cache = thread_cache();
  if (cache.find(word, h, out)) return;
  size_t start = out.size();
  merge_word(word, out);
  cache.insert(word, h, out.data() + start, out.size() - start);
}

}  // namespace r1::tok
