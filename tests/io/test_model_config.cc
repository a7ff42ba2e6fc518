// config.json parsing: every real config in tests/data/configs, derived values
// (attention scale with YaRN mscale, MoE layer pattern, parameter counts),
// transformers defaults for absent keys, and error messages.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/model_config.h"

namespace r1::io {
namespace {

std::string config_dir() {
  return std::string(R1_TEST_DATA_DIR) + "/configs";
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ModelConfig parse_file(const std::string& name) {
  auto r = parse_model_config(read(config_dir() + "/" + name), name);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? *r : ModelConfig{};
}

Status parse_err(const std::string& text) {
  auto r = parse_model_config(text, "dir/config.json");
  EXPECT_FALSE(r.is_ok());
  return r.status();
}

TEST(ModelConfig, ParsesEveryRealConfig) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(config_dir())) {
    if (e.path().extension() != ".json") continue;
    auto r = parse_model_config(read(e.path().string()), e.path().string());
    EXPECT_TRUE(r.is_ok()) << e.path() << ": " << r.status().to_string();
    ++n;
  }
  EXPECT_GE(n, 6);
}

TEST(ModelConfig, DeepSeekR1) {
  ModelConfig c = parse_file("deepseek-r1-671b.json");
  EXPECT_EQ(c.arch, ModelArch::kDeepseekV3);
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.num_layers, 61);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.kv_lora_rank, 512);
  EXPECT_EQ(c.qk_head_dim(), 192);
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSigmoid);
  EXPECT_EQ(c.topk_method, TopkMethod::kNoauxTc);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.rope.type, RopeType::kYarn);
  EXPECT_DOUBLE_EQ(c.rope.factor, 40.0);
  EXPECT_EQ(c.rope.original_max_position, 4096);
  EXPECT_TRUE(c.fp8);
  EXPECT_EQ(c.fp8_block_rows, 128);
  EXPECT_EQ(c.fp8_block_cols, 128);
  EXPECT_TRUE(c.rope_interleave);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{1});
  EXPECT_NEAR(c.attention_scale(), 0.13523378, 5e-9);
  EXPECT_EQ(c.kv_values_per_token(), 576);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_TRUE(c.is_moe_layer(3));
  EXPECT_TRUE(c.is_moe_layer(60));
  // The README's 671B main-model parameters.
  EXPECT_NEAR(static_cast<double>(c.parameter_count()) / 1e9, 671.0, 1.0);
}

TEST(ModelConfig, DeepSeekV2Lite) {
  ModelConfig c = parse_file("deepseek-v2-lite-16b.json");
  EXPECT_EQ(c.arch, ModelArch::kDeepseekV2);
  EXPECT_EQ(c.q_lora_rank, 0);  // null: plain q_proj
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSoftmax);
  EXPECT_EQ(c.topk_method, TopkMethod::kGreedy);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.n_shared_experts, 2);
  EXPECT_EQ(c.num_experts_per_tok, 6);
  EXPECT_FALSE(c.fp8);
  EXPECT_NEAR(c.attention_scale(), 0.11472139, 5e-9);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_NEAR(static_cast<double>(c.parameter_count()) / 1e9, 15.7, 0.1);
}

TEST(ModelConfig, DistillLlama) {
  ModelConfig c = parse_file("r1-distill-llama-8b.json");
  EXPECT_EQ(c.arch, ModelArch::kLlama);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.rope.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope.original_max_position, 8192);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_NEAR(c.attention_scale(), 1.0 / std::sqrt(128.0), 1e-12);
  EXPECT_EQ(c.kv_values_per_token(), 2 * 8 * 128);
  EXPECT_FALSE(c.is_moe_layer(5));
  EXPECT_NEAR(static_cast<double>(c.parameter_count()) / 1e9, 8.03, 0.02);
}

TEST(ModelConfig, DistillQwen) {
  ModelConfig c = parse_file("r1-distill-qwen-7b.json");
  EXPECT_EQ(c.arch, ModelArch::kQwen2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope.type, RopeType::kDefault);
  EXPECT_EQ(c.bos_token_id, 151646);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151643});
  EXPECT_NEAR(static_cast<double>(c.parameter_count()) / 1e9, 7.62, 0.02);
}

TEST(ModelConfig, Defaults) {
  // DeepseekV3Config defaults for absent MoE / MLA keys.
  auto r = parse_model_config(R"({"model_type":"deepseek_v3","vocab_size":100,"hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":2})",
                              "config.json");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->n_group, 8);
  EXPECT_EQ(r->topk_group, 4);
  EXPECT_TRUE(r->norm_topk_prob);
  EXPECT_DOUBLE_EQ(r->routed_scaling_factor, 2.5);
  EXPECT_EQ(r->first_k_dense_replace, 3);
  EXPECT_EQ(r->moe_layer_freq, 1);
  EXPECT_EQ(r->n_routed_experts, 256);
  EXPECT_EQ(r->q_lora_rank, 1536);
  EXPECT_EQ(r->rope.type, RopeType::kDefault);
  EXPECT_NEAR(r->attention_scale(), 1.0 / std::sqrt(192.0), 1e-12);
  // Llama: kv heads default to heads, head_dim to hidden / heads.
  auto l = parse_model_config(R"({"model_type":"llama","vocab_size":100,"hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
      "eos_token_id":[5,6],"bos_token_id":null})",
                              "config.json");
  ASSERT_TRUE(l.is_ok()) << l.status().to_string();
  EXPECT_EQ(l->num_kv_heads, 4);
  EXPECT_EQ(l->head_dim, 16);
  EXPECT_EQ(l->eos_token_ids, (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(l->bos_token_id, -1);
  EXPECT_FALSE(l->tie_word_embeddings);
  EXPECT_FALSE(l->qkv_bias);
}

TEST(ModelConfig, RopeParametersTransformers5) {
  auto r = parse_model_config(R"({"model_type":"deepseek_v3","vocab_size":100,"hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":2,
      "rope_parameters":{"rope_type":"yarn","rope_theta":20000.0,"factor":40,
        "original_max_position_embeddings":4096,"mscale":1.0,"mscale_all_dim":1.0}})",
                              "config.json");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->rope.type, RopeType::kYarn);
  EXPECT_DOUBLE_EQ(r->rope.theta, 20000.0);
  EXPECT_NEAR(r->attention_scale(), 0.13523378, 5e-9);
}

TEST(ModelConfig, Errors) {
  Status s = parse_err(R"({"model_type":"gpt2","vocab_size":1})");
  EXPECT_NE(s.message().find("gpt2"), std::string::npos);
  EXPECT_NE(s.message().find("deepseek_v3, deepseek_v2, qwen2, llama"), std::string::npos);
  EXPECT_NE(s.message().find("config.json"), std::string::npos);

  s = parse_err(R"({"vocab_size":1})");
  EXPECT_NE(s.message().find("model_type"), std::string::npos);

  s = parse_err(R"({"model_type":"llama","vocab_size":100,"intermediate_size":128,
      "num_hidden_layers":2,"num_attention_heads":4})");
  EXPECT_NE(s.message().find("'hidden_size'"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("config.json"), std::string::npos);

  s = parse_err(R"({"model_type":"llama","vocab_size":"100","hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4})");
  EXPECT_NE(s.message().find("'vocab_size'"), std::string::npos) << s.message();

  s = parse_err(R"({"model_type":"llama","vocab_size":100,"hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
      "num_key_value_heads":3})");
  EXPECT_NE(s.message().find("num_key_value_heads"), std::string::npos) << s.message();

  const std::string ds = R"({"model_type":"deepseek_v3","vocab_size":100,"hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":2,)";
  s = parse_err(ds + R"("n_routed_experts":12,"n_group":5})");
  EXPECT_NE(s.message().find("n_group"), std::string::npos) << s.message();
  s = parse_err(ds + R"("n_group":4,"topk_group":5})");
  EXPECT_NE(s.message().find("topk_group"), std::string::npos) << s.message();
  s = parse_err(ds + R"("num_experts_per_tok":300})");
  EXPECT_NE(s.message().find("num_experts_per_tok"), std::string::npos) << s.message();
  s = parse_err(ds + R"("rope_scaling":{"type":"linear","factor":2}})");
  EXPECT_NE(s.message().find("rope_scaling.type"), std::string::npos) << s.message();
  s = parse_err(ds + R"("rope_scaling":{"type":"yarn"}})");
  EXPECT_NE(s.message().find("rope_scaling.factor"), std::string::npos) << s.message();
  s = parse_err(ds + R"("quantization_config":{"quant_method":"gptq"}})");
  EXPECT_NE(s.message().find("quant_method"), std::string::npos) << s.message();
  s = parse_err(ds + R"("hidden_size":32})");
  EXPECT_NE(s.message().find("duplicate key 'hidden_size'"), std::string::npos) << s.message();
  s = parse_err(R"({"model_type":"deepseek_v2","vocab_size":100,"hidden_size":64,
      "intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":2})");
  EXPECT_NE(s.message().find("num_experts_per_tok"), std::string::npos) << s.message();
  s = parse_err("[1,2]");
  s = parse_err("{\"model_type\":");
  EXPECT_NE(s.message().find("config.json"), std::string::npos);

  auto missing = load_model_config("/nonexistent/model");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/model/config.json"), std::string::npos);
}

}  // namespace
}  // namespace r1::io
