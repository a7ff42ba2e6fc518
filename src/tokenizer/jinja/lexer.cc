// Jinja2-compatible tokenizer. Mirrors jinja2/lexer.py's rules for what the
// chat templates need: newline normalisation, the single trailing newline
// dropped, `-`/`+` whitespace control, trim_blocks and lstrip_blocks (which
// apply to block and comment tags, never to {{ }}), and Python string escapes.
#include "tokenizer/jinja/lexer.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace r1::tok::jinja {
namespace {

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

class Lexer {
 public:
  Lexer(std::string src, const LexerOptions& opt) : src_(std::move(src)), opt_(opt) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    const size_t n = src_.size();
    while (pos < n) {
      size_t i = find_tag(pos);
      if (i == std::string::npos) {
        emit_text(src_.substr(pos), pos);
        break;
      }
      std::string data = src_.substr(pos, i - pos);
      char c = src_[i + 1];
      char sign = (i + 2 < n && (src_[i + 2] == '-' || src_[i + 2] == '+')) ? src_[i + 2] : 0;
      if (c == '{' && sign == '+') sign = 0;  // `{{+` is not whitespace control
      if (sign == '-') {
        while (!data.empty() && is_ws(data.back())) data.pop_back();
      } else if (sign != '+' && opt_.lstrip_blocks && c != '{') {
        size_t l_pos = data.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if (l_pos > 0 || line_starting) {
          bool only_blank = std::all_of(data.begin() + l_pos, data.end(),
                                        [](char ch) { return ch == ' ' || ch == '\t'; });
          if (only_blank) data.resize(l_pos);
        }
      }
      emit_text(data, pos);
      size_t body = i + 2 + (sign ? 1 : 0);
      if (c == '#') {
        pos = lex_comment(i, body);
      } else if (c == '%' && is_raw(body)) {
        pos = lex_raw(i, body);
      } else {
        pos = lex_tag(i, body, c == '%');
      }
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    Token eof{TokenKind::kEof, "", 0, 0.0, at(src_.size())};
    tokens_.push_back(eof);
    return std::move(tokens_);
  }

 private:
  SourcePos at(size_t offset) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    size_t line = static_cast<size_t>(it - line_starts_.begin());
    return SourcePos{static_cast<int>(line), static_cast<int>(offset - line_starts_[line - 1] + 1)};
  }

  [[noreturn]] void fail(size_t offset, const std::string& what) const {
    SourcePos p = at(offset);
    throw TemplateError{
        fmt::format("template syntax error at line {}, column {}: {}", p.line, p.column, what), p};
  }

  size_t find_tag(size_t from) const {
    size_t i = from;
    while ((i = src_.find('{', i)) != std::string::npos) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#'))
        return i;
      ++i;
    }
    return std::string::npos;
  }

  void emit_text(const std::string& text, size_t offset) {
    if (text.empty()) return;
    tokens_.push_back(Token{TokenKind::kText, text, 0, 0.0, at(offset)});
  }

  // After a block or comment end: `-` strips all following whitespace,
  // trim_blocks removes one newline, `+` keeps everything.
  size_t after_end(size_t end_pos, char sign) const {
    if (sign == '-') {
      while (end_pos < src_.size() && is_ws(src_[end_pos])) ++end_pos;
    } else if (sign != '+' && opt_.trim_blocks && end_pos < src_.size() && src_[end_pos] == '\n') {
      ++end_pos;
    }
    return end_pos;
  }

  size_t lex_comment(size_t start, size_t body) {
    size_t j = src_.find("#}", body);
    if (j == std::string::npos) fail(start, "unterminated comment");
    char sign = (j > body && (src_[j - 1] == '-' || src_[j - 1] == '+')) ? src_[j - 1] : 0;
    return after_end(j + 2, sign);
  }

  bool is_raw(size_t body) const {
    size_t p = body;
    while (p < src_.size() && is_ws(src_[p])) ++p;
    return src_.compare(p, 3, "raw") == 0 &&
           (p + 3 >= src_.size() || !std::isalnum(static_cast<unsigned char>(src_[p + 3])));
  }

  // {% raw %}...{% endraw %}: the contents are text, untouched.
  size_t lex_raw(size_t start, size_t body) {
    size_t close = src_.find("%}", body);
    if (close == std::string::npos) fail(start, "unterminated raw tag");
    char sign = src_[close - 1] == '-' ? '-' : (src_[close - 1] == '+' ? '+' : 0);
    size_t content = after_end(close + 2, sign);
    size_t search = content;
    while (true) {
      size_t tag = src_.find("{%", search);
      if (tag == std::string::npos) fail(start, "missing endraw");
      size_t p = tag + 2;
      char open_sign = (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ? src_[p] : 0;
      if (open_sign) ++p;
      while (p < src_.size() && is_ws(src_[p])) ++p;
      if (src_.compare(p, 6, "endraw") == 0) {
        std::string text = src_.substr(content, tag - content);
        if (open_sign == '-') {
          while (!text.empty() && is_ws(text.back())) text.pop_back();
        }
        emit_text(text, content);
        size_t end = src_.find("%}", p);
        if (end == std::string::npos) fail(tag, "unterminated endraw tag");
        char end_sign = src_[end - 1] == '-' ? '-' : (src_[end - 1] == '+' ? '+' : 0);
        return after_end(end + 2, end_sign);
      }
      search = tag + 2;
    }
  }

  size_t lex_tag(size_t start, size_t body, bool block) {
    tokens_.push_back(
        Token{block ? TokenKind::kBlockBegin : TokenKind::kVarBegin, "", 0, 0.0, at(start)});
    size_t p = body;
    int depth = 0;
    const size_t n = src_.size();
    while (true) {
      while (p < n && is_ws(src_[p])) ++p;
      if (p >= n) fail(start, block ? "unterminated '{%' tag" : "unterminated '{{' tag");
      if (depth == 0) {
        const char* end = block ? "%}" : "}}";
        char sign = 0;
        size_t epos = std::string::npos;
        if ((src_[p] == '-' || (block && src_[p] == '+')) && src_.compare(p + 1, 2, end) == 0) {
          sign = src_[p];
          epos = p + 1;
        } else if (src_.compare(p, 2, end) == 0) {
          epos = p;
        }
        if (epos != std::string::npos) {
          tokens_.push_back(
              Token{block ? TokenKind::kBlockEnd : TokenKind::kVarEnd, "", 0, 0.0, at(p)});
          if (!block) {
            size_t q = epos + 2;
            if (sign == '-') {
              while (q < n && is_ws(src_[q])) ++q;
            }
            return q;
          }
          return after_end(epos + 2, sign);
        }
      }
      char c = src_[p];
      size_t tok_start = p;
      if (c == '\'' || c == '"') {
        p = lex_string(p);
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        p = lex_number(p);
      } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        while (p < n && (std::isalnum(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) ++p;
        tokens_.push_back(
            Token{TokenKind::kName, src_.substr(tok_start, p - tok_start), 0, 0.0, at(tok_start)});
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                     "/",  "%",  "~",  "<",  ">",  "=",  ".", ",", ":",
                                     "|",  "(",  ")",  "[",  "]",  "{",  "}"};
        const char* match = nullptr;
        for (const char* op : kOps) {
          if (src_.compare(p, std::strlen(op), op) == 0) {
            match = op;
            break;
          }
        }
        if (!match) fail(p, fmt::format("unexpected character '{}'", c));
        std::string op(match);
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") {
          if (depth == 0) fail(p, fmt::format("unexpected '{}'", op));
          --depth;
        }
        p += op.size();
        tokens_.push_back(Token{TokenKind::kOperator, op, 0, 0.0, at(tok_start)});
      }
    }
  }

  size_t lex_number(size_t p) {
    size_t start = p;
    const size_t n = src_.size();
    auto digits = [&](size_t q) {
      while (q < n && (std::isdigit(static_cast<unsigned char>(src_[q])) || src_[q] == '_')) ++q;
      return q;
    };
    p = digits(p);
    bool is_float = false;
    bool after_dot = !tokens_.empty() && tokens_.back().kind == TokenKind::kOperator &&
                     tokens_.back().text == ".";
    if (!after_dot && p + 1 < n && src_[p] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[p + 1]))) {
      is_float = true;
      p = digits(p + 1);
    }
    if (!after_dot && p < n && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      if (q < n && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < n && std::isdigit(static_cast<unsigned char>(src_[q]))) {
        is_float = true;
        p = digits(q);
      }
    }
    std::string text;
    for (size_t i = start; i < p; ++i) {
      if (src_[i] != '_') text.push_back(src_[i]);
    }
    Token t{is_float ? TokenKind::kFloat : TokenKind::kInt, text, 0, 0.0, at(start)};
    try {
      if (is_float)
        t.float_value = std::stod(text);
      else
        t.int_value = std::stoll(text);
    } catch (...) {
      fail(start, "number out of range");
    }
    tokens_.push_back(std::move(t));
    return p;
  }

  static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Python string literal escapes (jinja decodes with 'unicode-escape').
  size_t lex_string(size_t p) {
    const char quote = src_[p];
    size_t start = p++;
    std::string out;
    const size_t n = src_.size();
    while (true) {
      if (p >= n) fail(start, "unterminated string literal");
      char c = src_[p];
      if (c == quote) {
        ++p;
        break;
      }
      if (c != '\\') {
        out.push_back(c);
        ++p;
        continue;
      }
      if (p + 1 >= n) fail(start, "unterminated string literal");
      char e = src_[p + 1];
      p += 2;
      switch (e) {
        case '\n':
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '\'':
          out.push_back('\'');
          break;
        case '"':
          out.push_back('"');
          break;
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'x':
        case 'u':
        case 'U': {
          int len = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
          char32_t cp = 0;
          for (int k = 0; k < len; ++k) {
            int h = p + k < n ? hex_value(src_[p + k]) : -1;
            if (h < 0) fail(p - 2, "truncated \\x/\\u escape in string literal");
            cp = cp * 16 + static_cast<char32_t>(h);
          }
          if (cp > 0x10ffff) fail(p - 2, "illegal Unicode character in string literal");
          p += len;
          utf8_append(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            char32_t cp = static_cast<char32_t>(e - '0');
            for (int k = 0; k < 2 && p < n && src_[p] >= '0' && src_[p] <= '7'; ++k)
              cp = cp * 8 + (src_[p++] - '0');
            utf8_append(out, cp);
          } else {
            out.push_back('\\');
            out.push_back(e);
          }
      }
    }
    tokens_.push_back(Token{TokenKind::kString, std::move(out), 0, 0.0, at(start)});
    return p;
  }

  std::string src_;
  LexerOptions opt_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

// Jinja normalises \r\n and \r to \n and, unless keep_trailing_newline is
// set, drops one trailing newline.
std::string normalize_source(const std::string& source, bool keep_trailing_newline) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!keep_trailing_newline && !out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

std::vector<Token> tokenize(const std::string& source, const LexerOptions& options) {
  Lexer lexer(normalize_source(source, options.keep_trailing_newline), options);
  return lexer.run();
}

}  // namespace r1::tok::jinja
