// Splits template source into tokens the way Jinja2's lexer does, including
// whitespace control: `-` on tags, and the trim_blocks / lstrip_blocks
// settings that transformers' apply_chat_template turns on.
#pragma once

#include <string>
#include <vector>

#include "tokenizer/jinja/ast.h"

namespace r1::tok::jinja {

enum class TokenKind {
  kText,        // literal template text (whitespace control already applied)
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,
  kString,
  kInt,
  kFloat,
  kOperator,
  kEof,
};

struct Token {
  TokenKind kind;
  std::string text;  // text, name, operator, or the decoded string literal
  int64_t int_value = 0;
  double float_value = 0.0;
  SourcePos pos;
};

struct LexerOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

// Throws TemplateError on malformed input (unterminated tag, string, comment).
std::vector<Token> tokenize(const std::string& source, const LexerOptions& options);

}  // namespace r1::tok::jinja
