// Builds the syntax tree from tokens, following Jinja2's grammar and operator
// precedence. Tags outside the supported subset (include, import, extends,
// block, call, ...) are rejected here with their line and column.
#pragma once

#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/lexer.h"

namespace r1::tok::jinja {

// Throws TemplateError on a syntax error or an unsupported construct.
std::vector<StmtPtr> parse(const std::vector<Token>& tokens);

}  // namespace r1::tok::jinja
