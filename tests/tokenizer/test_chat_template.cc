// ChatTemplate loading and the variables it passes: list-form chat_template
// with tool_use selection, AddedToken-dict special tokens, null tokens left
// undefined (as transformers' special_tokens_map leaves them out), extra
// variables, model-directory loading, and error reporting.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"

namespace r1::tok {
namespace {

using ojson = nlohmann::ordered_json;

TEST(ChatTemplate, ListFormAndToolUseSelection) {
  ojson cfg = {{"bos_token", {{"__type", "AddedToken"}, {"content", "<s>"}}},
               {"eos_token", "</s>"},
               {"unk_token", nullptr},
               {"chat_template",
                {{{"name", "default"}, {"template", "{{ bos_token }}D{{ unk_token is defined }}"}},
                 {{"name", "tool_use"}, {"template", "T{{ tools | length }}{{ eos_token }}"}}}}};
  auto ct = ChatTemplate::from_config_json(cfg, "test");
  ASSERT_TRUE(ct.is_ok()) << ct.status().to_string();
  ojson msgs = ojson::array();
  EXPECT_EQ(ct->render(msgs, false).value(), "<s>DFalse");
  EXPECT_EQ(ct->render(msgs, false, ojson::array({ojson::object()})).value(), "T1</s>");
}

TEST(ChatTemplate, VariablesLikeTransformers) {
  auto ct = ChatTemplate::from_string(
      "{{ tools is none }}|{{ add_generation_prompt }}|{{ messages[0].content }}|{{ "
      "enable_thinking }}|"
      "{{ strftime_now('%Y') | length }}");
  ASSERT_TRUE(ct.is_ok());
  ojson msgs = ojson::array({{{"role", "user"}, {"content", "hi"}}});
  EXPECT_EQ(ct->render(msgs, true, nullptr, {{"enable_thinking", false}}).value(),
            "True|True|hi|False|4");
}

TEST(ChatTemplate, ModelDirectoryAndErrors) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / "r1_chat_template_dir";
  fs::create_directories(dir);
  {
    std::ofstream(dir / "tokenizer_config.json")
        << R"({"bos_token": "<b>", "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{% endfor %}"})";
  }
  auto ct = ChatTemplate::from_tokenizer_config(dir.string());
  ASSERT_TRUE(ct.is_ok()) << ct.status().to_string();
  EXPECT_EQ(ct->render(ojson::array({{{"role", "user"}}}), false).value(), "<b>[user]");

  EXPECT_FALSE(ChatTemplate::from_tokenizer_config((dir / "missing.json").string()).is_ok());
  auto bad = ChatTemplate::from_string("{% for %}");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("line 1"), std::string::npos);
  auto raises = ChatTemplate::from_string("{{ raise_exception('roles must alternate') }}");
  ASSERT_TRUE(raises.is_ok());
  auto r = raises->render(ojson::array(), false);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("roles must alternate"), std::string::npos);
  EXPECT_FALSE(raises->render(ojson::object(), false).is_ok());  // messages must be an array
}

}  // namespace
}  // namespace r1::tok
