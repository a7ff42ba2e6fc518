// The public face of the Jinja interpreter: parse a template once, render it
// many times with different variables. Rendering is sandboxed (see
// interpreter.h for the budgets); every failure comes back as a Status whose
// message names the line and column.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "tokenizer/jinja/interpreter.h"
#include "tokenizer/jinja/lexer.h"

namespace r1::tok::jinja {

class Template {
 public:
  // Parses `source` with transformers' settings by default (trim_blocks,
  // lstrip_blocks, one trailing newline dropped). Syntax errors and
  // unsupported tags, filters or tests are reported here.
  static Result<Template> parse(const std::string& source, const LexerOptions& options = {});

  // Renders with `variables` (name -> value) on top of the builtin globals.
  // Errors: kInvalidArgument for template errors (incl. raise_exception),
  // kResourceExhausted when a budget is exceeded.
  Result<std::string> render(std::vector<std::pair<std::string, Value>> variables,
                             const RenderLimits& limits = {}) const;

 private:
  std::shared_ptr<const std::vector<StmtPtr>> body_;
};

}  // namespace r1::tok::jinja
