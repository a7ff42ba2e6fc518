// Template: parse, a check that every filter and test named exists (Jinja
// rejects unknown ones at compile time too), and render with errors turned
// into Status values.
#include "tokenizer/jinja/template.h"

#include <fmt/format.h>

#include "tokenizer/jinja/parser.h"

namespace r1::tok::jinja {
namespace {

void check_expr(const Expr* e) {
  if (!e) return;
  if (e->kind == ExprKind::kFilter && !filter_exists(e->name)) {
    throw TemplateError{
        fmt::format("template syntax error at line {}, column {}: unsupported filter '{}'",
                    e->pos.line, e->pos.column, e->name),
        e->pos};
  }
  if (e->kind == ExprKind::kTest && !test_exists(e->name)) {
    throw TemplateError{
        fmt::format("template syntax error at line {}, column {}: unsupported test '{}'",
                    e->pos.line, e->pos.column, e->name),
        e->pos};
  }
  for (const auto& a : e->args) check_expr(a.get());
  for (const auto& kv : e->kwargs) check_expr(kv.second.get());
}

void check_body(const std::vector<StmtPtr>& body) {
  for (const auto& s : body) {
    check_expr(s->expr.get());
    check_expr(s->filter.get());
    for (const auto& p : s->params) check_expr(p.default_value.get());
    check_body(s->body);
    check_body(s->else_body);
  }
}

}  // namespace

Result<Template> Template::parse(const std::string& source, const LexerOptions& options) {
  try {
    auto body = std::make_shared<std::vector<StmtPtr>>(jinja::parse(tokenize(source, options)));
    check_body(*body);
    Template t;
    t.body_ = std::move(body);
    return t;
  } catch (const TemplateError& e) {
    return Status(ErrorCode::kInvalidArgument, e.message);
  }
}

Result<std::string> Template::render(std::vector<std::pair<std::string, Value>> variables,
                                     const RenderLimits& limits) const {
  if (!body_) return Status(ErrorCode::kInternal, "render called on an empty Template");
  try {
    Interpreter interp(limits, std::move(variables));
    return interp.render(*body_);
  } catch (const TemplateError& e) {
    return Status(e.resource ? ErrorCode::kResourceExhausted : ErrorCode::kInvalidArgument,
                  e.message);
  }
}

}  // namespace r1::tok::jinja
