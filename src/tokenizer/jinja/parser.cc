// Recursive-descent parser for the Jinja2 subset. Precedence (loosest first):
// conditional `a if b else c`, or, and, not, comparisons (incl. in / not in),
// + -, ~, * / // %, **, unary - +, then primary with postfix . [] () and the
// filter chain | / is / call, exactly as jinja2/parser.py orders them.
#include "tokenizer/jinja/parser.h"

#include <set>

#include <fmt/format.h>

namespace r1::tok::jinja {
namespace {

constexpr int kMaxNesting = 200;

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : toks_(tokens) {}

  std::vector<StmtPtr> parse_template() {
    std::string end_tag;
    auto body = parse_body({}, &end_tag);
    if (!end_tag.empty()) fail(cur().pos, fmt::format("unexpected tag '{}'", end_tag));
    return body;
  }

 private:
  // ---- token helpers ----
  const Token& cur() const { return toks_[i_]; }
  const Token& peek(size_t k = 1) const { return toks_[std::min(i_ + k, toks_.size() - 1)]; }
  void advance() {
    if (i_ + 1 < toks_.size()) ++i_;
  }
  bool is_op(const char* op) const {
    return cur().kind == TokenKind::kOperator && cur().text == op;
  }
  bool is_name(const char* name) const {
    return cur().kind == TokenKind::kName && cur().text == name;
  }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    advance();
    return true;
  }
  [[noreturn]] void fail(SourcePos p, const std::string& what) const {
    throw TemplateError{
        fmt::format("template syntax error at line {}, column {}: {}", p.line, p.column, what), p};
  }
  std::string describe(const Token& t) const {
    switch (t.kind) {
      case TokenKind::kEof:
        return "end of template";
      case TokenKind::kBlockEnd:
        return "'%}'";
      case TokenKind::kVarEnd:
        return "'}}'";
      case TokenKind::kText:
        return "text";
      default:
        return "'" + t.text + "'";
    }
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(cur().pos, fmt::format("expected '{}', got {}", op, describe(cur())));
  }
  std::string expect_name() {
    if (cur().kind != TokenKind::kName)
      fail(cur().pos, fmt::format("expected a name, got {}", describe(cur())));
    std::string n = cur().text;
    advance();
    return n;
  }
  void expect_block_end() {
    if (cur().kind != TokenKind::kBlockEnd)
      fail(cur().pos, fmt::format("expected '%}}', got {}", describe(cur())));
    advance();
  }

  ExprPtr make(ExprKind k, SourcePos p) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->pos = p;
    return e;
  }

  // ---- statements ----

  // Parses statements until a block tag named in `end_tags`; that tag's name
  // is stored in *end_tag (its `{% name` is consumed, the rest is not).
  std::vector<StmtPtr> parse_body(const std::set<std::string>& end_tags, std::string* end_tag) {
    std::vector<StmtPtr> body;
    end_tag->clear();
    while (cur().kind != TokenKind::kEof) {
      const Token& t = cur();
      if (t.kind == TokenKind::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kText;
        s->pos = t.pos;
        s->text = t.text;
        body.push_back(std::move(s));
        advance();
      } else if (t.kind == TokenKind::kVarBegin) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kOutput;
        s->pos = t.pos;
        advance();
        s->expr = parse_tuple(true);
        if (cur().kind != TokenKind::kVarEnd)
          fail(cur().pos, fmt::format("expected '}}}}', got {}", describe(cur())));
        advance();
        body.push_back(std::move(s));
      } else if (t.kind == TokenKind::kBlockBegin) {
        const Token& name_tok = peek();
        if (name_tok.kind != TokenKind::kName) fail(name_tok.pos, "expected a tag name after '{%'");
        if (end_tags.count(name_tok.text)) {
          *end_tag = name_tok.text;
          advance();
          advance();
          return body;
        }
        advance();
        body.push_back(parse_statement());
      } else {
        fail(t.pos, fmt::format("unexpected {}", describe(t)));
      }
    }
    if (!end_tags.empty()) {
      std::string expected;
      for (const auto& e : end_tags) expected += (expected.empty() ? "'" : " or '") + e + "'";
      fail(cur().pos, fmt::format("unexpected end of template, expected {}", expected));
    }
    return body;
  }

  StmtPtr parse_statement() {
    const Token& t = cur();
    if (++depth_ > kMaxNesting) fail(t.pos, "blocks nested too deeply");
    StmtPtr s;
    if (t.text == "if")
      s = parse_if();
    else if (t.text == "for")
      s = parse_for();
    else if (t.text == "set")
      s = parse_set();
    else if (t.text == "macro")
      s = parse_macro();
    else if (t.text == "break" || t.text == "continue") {
      s = std::make_unique<Stmt>();
      s->kind = t.text == "break" ? StmtKind::kBreak : StmtKind::kContinue;
      s->pos = t.pos;
      if (loop_depth_ == 0) fail(t.pos, fmt::format("'{}' outside of a loop", t.text));
      advance();
      expect_block_end();
    } else if (t.text == "filter")
      s = parse_filter_block();
    else if (t.text == "generation") {
      s = std::make_unique<Stmt>();
      s->kind = StmtKind::kBlock;
      s->pos = t.pos;
      advance();
      expect_block_end();
      std::string end;
      s->body = parse_body({"endgeneration"}, &end);
      expect_block_end();
    } else {
      fail(t.pos, fmt::format("unsupported tag '{}'", t.text));
    }
    --depth_;
    return s;
  }

  StmtPtr parse_if() {
    auto s = std::make_unique<Stmt>();
    s->kind = StmtKind::kIf;
    s->pos = cur().pos;
    advance();  // if / elif
    s->expr = parse_expression();
    expect_block_end();
    std::string end;
    s->body = parse_body({"elif", "else", "endif"}, &end);
    if (end == "elif") {
      --i_;  // re-read the `elif` name as the head of a nested if
      s->else_body.push_back(parse_if());
      return s;
    }
    if (end == "else") {
      expect_block_end();
      s->else_body = parse_body({"endif"}, &end);
    }
    expect_block_end();
    return s;
  }

  StmtPtr parse_for() {
    auto s = std::make_unique<Stmt>();
    s->kind = StmtKind::kFor;
    s->pos = cur().pos;
    advance();
    s->targets = parse_targets();
    if (!skip_name("in")) fail(cur().pos, fmt::format("expected 'in', got {}", describe(cur())));
    s->expr = parse_tuple(false);
    if (skip_name("if")) s->filter = parse_expression();
    if (is_name("recursive")) fail(cur().pos, "unsupported: recursive for loops");
    expect_block_end();
    std::string end;
    ++loop_depth_;
    s->body = parse_body({"else", "endfor"}, &end);
    --loop_depth_;
    if (end == "else") {
      expect_block_end();
      s->else_body = parse_body({"endfor"}, &end);
    }
    expect_block_end();
    return s;
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    bool paren = skip_op("(");
    names.push_back(expect_name());
    while (skip_op(",")) {
      if (is_name("in") || is_op("=") || is_op(")")) break;
      names.push_back(expect_name());
    }
    if (paren) expect_op(")");
    return names;
  }

  StmtPtr parse_set() {
    auto s = std::make_unique<Stmt>();
    s->pos = cur().pos;
    advance();
    std::string first = expect_name();
    if (skip_op(".")) {
      s->kind = StmtKind::kSet;
      s->targets.push_back(first);
      s->attr = expect_name();
      expect_op("=");
      s->expr = parse_tuple(true);
      expect_block_end();
      return s;
    }
    s->targets.push_back(first);
    while (skip_op(",")) s->targets.push_back(expect_name());
    if (skip_op("=")) {
      s->kind = StmtKind::kSet;
      s->expr = parse_tuple(true);
      expect_block_end();
      return s;
    }
    if (s->targets.size() != 1) fail(cur().pos, "expected '=' in set with several targets");
    s->kind = StmtKind::kSetBlock;
    if (is_op("|")) fail(cur().pos, "unsupported: filtered block set");
    expect_block_end();
    std::string end;
    s->body = parse_body({"endset"}, &end);
    expect_block_end();
    return s;
  }

  StmtPtr parse_macro() {
    auto s = std::make_unique<Stmt>();
    s->kind = StmtKind::kMacro;
    s->pos = cur().pos;
    advance();
    s->name = expect_name();
    expect_op("(");
    while (!is_op(")")) {
      if (!s->params.empty()) expect_op(",");
      if (is_op(")")) break;
      MacroParam p;
      p.name = expect_name();
      if (skip_op("=")) p.default_value = parse_expression();
      s->params.push_back(std::move(p));
    }
    expect_op(")");
    expect_block_end();
    std::string end;
    int saved_loop = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_body({"endmacro"}, &end);
    loop_depth_ = saved_loop;
    if (cur().kind == TokenKind::kName) advance();  // {% endmacro name %}
    expect_block_end();
    return s;
  }

  StmtPtr parse_filter_block() {
    auto s = std::make_unique<Stmt>();
    s->kind = StmtKind::kFilterBlock;
    s->pos = cur().pos;
    advance();
    s->filter = parse_filter(nullptr);
    while (is_op("|")) s->filter = parse_filter(std::move(s->filter));
    expect_block_end();
    std::string end;
    s->body = parse_body({"endfilter"}, &end);
    expect_block_end();
    return s;
  }

  // ---- expressions ----

  // Comma-separated expressions become a tuple (`{% set a, b = 1, 2 %}`).
  ExprPtr parse_tuple(bool with_condexpr) {
    SourcePos p = cur().pos;
    auto one = [&] { return with_condexpr ? parse_expression() : parse_or(); };
    ExprPtr first = one();
    if (!is_op(",")) return first;
    auto t = make(ExprKind::kTuple, p);
    t->args.push_back(std::move(first));
    while (skip_op(",")) {
      if (cur().kind == TokenKind::kBlockEnd || cur().kind == TokenKind::kVarEnd || is_op(")") ||
          is_name("if"))
        break;
      t->args.push_back(one());
    }
    return t;
  }

  ExprPtr parse_expression() {
    if (++depth_ > kMaxNesting) fail(cur().pos, "expression nested too deeply");
    ExprPtr e = parse_or();
    while (is_name("if")) {
      SourcePos p = cur().pos;
      advance();
      auto c = make(ExprKind::kCondExpr, p);
      ExprPtr test = parse_or();
      ExprPtr otherwise = skip_name("else") ? parse_expression() : nullptr;
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(test));
      c->args.push_back(std::move(otherwise));
      e = std::move(c);
    }
    --depth_;
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      auto e = make(ExprKind::kOr, cur().pos);
      advance();
      e->args.push_back(std::move(left));
      e->args.push_back(parse_and());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      auto e = make(ExprKind::kAnd, cur().pos);
      advance();
      e->args.push_back(std::move(left));
      e->args.push_back(parse_not());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      if (++depth_ > kMaxNesting) fail(cur().pos, "expression nested too deeply");
      auto e = make(ExprKind::kNot, cur().pos);
      advance();
      e->args.push_back(parse_not());
      --depth_;
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    SourcePos p = cur().pos;
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().kind == TokenKind::kOperator &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == ">" ||
           cur().text == "<=" || cur().text == ">=")) {
        op = cur().text;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().kind == TokenKind::kName && peek().text == "in") {
        op = "notin";
        advance();
        advance();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(ExprKind::kCompare, p);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprPtr binary(const std::string& op, ExprPtr l, ExprPtr r, SourcePos p) {
    auto e = make(ExprKind::kBinary, p);
    e->name = op;
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = cur().text;
      SourcePos p = cur().pos;
      advance();
      left = binary(op, std::move(left), parse_concat(), p);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      SourcePos p = cur().pos;
      advance();
      left = binary("~", std::move(left), parse_math2(), p);
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = cur().text;
      SourcePos p = cur().pos;
      advance();
      left = binary(op, std::move(left), parse_pow(), p);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      SourcePos p = cur().pos;
      advance();
      left = binary("**", std::move(left), parse_unary(true), p);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    if (++depth_ > kMaxNesting) fail(cur().pos, "expression nested too deeply");
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      node = make(is_op("-") ? ExprKind::kNeg : ExprKind::kPos, cur().pos);
      advance();
      node->args.push_back(parse_unary(false));
    } else {
      node = parse_postfix(parse_primary());
    }
    if (with_filter) node = parse_filter_expr(std::move(node));
    --depth_;
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    SourcePos p = t.pos;
    switch (t.kind) {
      case TokenKind::kName: {
        static const std::set<std::string> kTrue{"true", "True"}, kFalse{"false", "False"},
            kNone{"none", "None"};
        auto e = make(ExprKind::kLiteral, p);
        if (kTrue.count(t.text))
          e->literal = Value(true);
        else if (kFalse.count(t.text))
          e->literal = Value(false);
        else if (kNone.count(t.text))
          e->literal = Value::none();
        else {
          e->kind = ExprKind::kName;
          e->name = t.text;
        }
        advance();
        return e;
      }
      case TokenKind::kString: {
        std::string s;
        while (cur().kind == TokenKind::kString) {
          s += cur().text;
          advance();
        }
        auto e = make(ExprKind::kLiteral, p);
        e->literal = Value(std::move(s));
        return e;
      }
      case TokenKind::kInt: {
        auto e = make(ExprKind::kLiteral, p);
        e->literal = Value(t.int_value);
        advance();
        return e;
      }
      case TokenKind::kFloat: {
        auto e = make(ExprKind::kLiteral, p);
        e->literal = Value(t.float_value);
        advance();
        return e;
      }
      case TokenKind::kOperator:
        if (t.text == "(") {
          advance();
          if (skip_op(")")) return make(ExprKind::kTuple, p);
          ExprPtr inner = parse_expression();
          if (is_op(",")) {
            auto tup = make(ExprKind::kTuple, p);
            tup->args.push_back(std::move(inner));
            while (skip_op(",")) {
              if (is_op(")")) break;
              tup->args.push_back(parse_expression());
            }
            inner = std::move(tup);
          }
          expect_op(")");
          return inner;
        }
        if (t.text == "[") {
          advance();
          auto e = make(ExprKind::kList, p);
          while (!is_op("]")) {
            if (!e->args.empty()) expect_op(",");
            if (is_op("]")) break;
            e->args.push_back(parse_expression());
          }
          expect_op("]");
          return e;
        }
        if (t.text == "{") {
          advance();
          auto e = make(ExprKind::kDict, p);
          while (!is_op("}")) {
            if (!e->args.empty()) expect_op(",");
            if (is_op("}")) break;
            e->args.push_back(parse_expression());
            expect_op(":");
            e->args.push_back(parse_expression());
          }
          expect_op("}");
          return e;
        }
        break;
      default:
        break;
    }
    fail(p, fmt::format("unexpected {}", describe(t)));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".")) {
        SourcePos p = cur().pos;
        advance();
        if (cur().kind == TokenKind::kInt) {
          auto e = make(ExprKind::kGetItem, p);
          auto idx = make(ExprKind::kLiteral, cur().pos);
          idx->literal = Value(cur().int_value);
          advance();
          e->args.push_back(std::move(node));
          e->args.push_back(std::move(idx));
          node = std::move(e);
        } else {
          auto e = make(ExprKind::kGetAttr, p);
          e->name = expect_name();
          e->args.push_back(std::move(node));
          node = std::move(e);
        }
      } else if (is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    SourcePos p = cur().pos;
    advance();  // [
    ExprPtr parts[3];
    bool is_slice = false;
    if (!is_op(":")) parts[0] = parse_expression();
    if (skip_op(":")) {
      is_slice = true;
      if (!is_op(":") && !is_op("]")) parts[1] = parse_expression();
      if (skip_op(":")) {
        if (!is_op("]")) parts[2] = parse_expression();
      }
    }
    expect_op("]");
    auto e = make(is_slice ? ExprKind::kSlice : ExprKind::kGetItem, p);
    e->args.push_back(std::move(node));
    if (is_slice) {
      for (auto& part : parts) e->args.push_back(std::move(part));
    } else {
      e->args.push_back(std::move(parts[0]));
    }
    return e;
  }

  void parse_call_args(Expr* e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) fail(cur().pos, "unsupported: *args / **kwargs in calls");
      if (cur().kind == TokenKind::kName && peek().kind == TokenKind::kOperator &&
          peek().text == "=") {
        std::string key = cur().text;
        advance();
        advance();
        e->kwargs.emplace_back(key, parse_expression());
      } else {
        if (!e->kwargs.empty()) fail(cur().pos, "positional argument after keyword argument");
        e->args.push_back(parse_expression());
      }
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto e = make(ExprKind::kCall, cur().pos);
    e->args.push_back(std::move(callee));
    parse_call_args(e.get());
    return e;
  }

  // `| name` or `| name(args)`; `operand` is null for a filter block.
  ExprPtr parse_filter(ExprPtr operand) {
    skip_op("|");
    auto e = make(ExprKind::kFilter, cur().pos);
    e->name = expect_name();
    e->args.push_back(std::move(operand));
    if (is_op("(")) parse_call_args(e.get());
    return e;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        node = parse_filter(std::move(node));
      } else if (is_name("is")) {
        auto e = make(ExprKind::kTest, cur().pos);
        advance();
        e->negated = skip_name("not");
        e->name = expect_name();
        e->args.push_back(std::move(node));
        if (is_op("(")) {
          parse_call_args(e.get());
        } else if ((cur().kind == TokenKind::kName || cur().kind == TokenKind::kString ||
                    cur().kind == TokenKind::kInt || cur().kind == TokenKind::kFloat ||
                    is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) fail(cur().pos, "you cannot chain multiple tests with 'is'");
          e->args.push_back(parse_postfix(parse_primary()));
        }
        node = std::move(e);
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  const std::vector<Token>& toks_;
  size_t i_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

std::vector<StmtPtr> parse(const std::vector<Token>& tokens) {
  Parser p(tokens);
  return p.parse_template();
}

}  // namespace r1::tok::jinja
