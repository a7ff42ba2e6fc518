// The syntax tree of a parsed template: expressions and statements, each with
// the line and column it came from so runtime errors can point at the source.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace r1::tok::jinja {

struct SourcePos {
  int line = 1;
  int column = 1;
};

// Raised anywhere in lexing, parsing or rendering; converted to a Status at
// the Template boundary. The message already names the line and column.
struct TemplateError {
  std::string message;
  SourcePos pos;
  bool resource = false;  // a budget was exceeded
};

enum class ExprKind {
  kLiteral,   // literal
  kName,      // name
  kList,      // args
  kTuple,     // args
  kDict,      // args: key, value, key, value...
  kGetAttr,   // args[0] . name
  kGetItem,   // args[0] [ args[1] ]
  kSlice,     // args[0] [ args[1] : args[2] : args[3] ] (null parts absent)
  kCall,      // args[0] ( args[1..], kwargs )
  kFilter,    // args[0] | name ( args[1..], kwargs )
  kTest,      // args[0] is [not] name ( args[1..], kwargs ); negated
  kNot,       // not args[0]
  kNeg,       // - args[0]
  kPos,       // + args[0]
  kBinary,    // args[0] op args[1]; op in + - * / // % ** ~
  kAnd,       // args[0] and args[1]
  kOr,        // args[0] or args[1]
  kCompare,   // args[0] ops[0] args[1] ops[1] args[2] ...
  kCondExpr,  // args[0] if args[1] else args[2] (args[2] may be null)
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  ExprKind kind;
  SourcePos pos;
  Value literal;
  std::string name;              // name, attribute, filter/test name, binary operator
  std::vector<std::string> ops;  // comparison operators
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;
};

enum class StmtKind {
  kText,      // text
  kOutput,    // {{ expr }}
  kIf,        // if expr: body else else_body (elif is a nested If)
  kFor,       // for targets in expr [if filter]: body else else_body
  kSet,       // set targets = expr, or set ns_name.attr = expr
  kSetBlock,  // set target %} body {% endset
  kMacro,     // macro name(params) body
  kBreak,
  kContinue,
  kFilterBlock,  // filter name(args) body
  kBlock,        // a body with no effect of its own ({% generation %})
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // may be null
};

struct Stmt {
  StmtKind kind;
  SourcePos pos;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;                    // for-loop filter; filter block's filter expression
  std::vector<std::string> targets;  // for/set names
  std::string attr;                  // set ns.attr: targets[0] is the namespace
  std::string name;                  // macro name
  std::vector<MacroParam> params;
  std::vector<StmtPtr> body;
  std::vector<StmtPtr> else_body;
};

}  // namespace r1::tok::jinja
