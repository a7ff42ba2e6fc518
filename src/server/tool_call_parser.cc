// DeepSeek tool-call parsing (see tool_call_parser.h).
#include "server/tool_call_parser.h"

#include <algorithm>
#include <atomic>
#include <random>

#include "server/reasoning_parser.h"

namespace r1::server {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() &&
         (s.front() == ' ' || s.front() == '\n' || s.front() == '\r' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\n' || s.back() == '\r' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

std::string make_tool_call_id() {
  static const char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) id += kChars[rng() % (sizeof(kChars) - 1)];
  return id;
}

bool ToolCallParser::parse_call(std::string_view seg, ToolCall& call) {
  size_t b = seg.find(kCallBegin);
  if (b != std::string_view::npos) seg = seg.substr(b + kCallBegin.size());
  size_t sep = seg.find(kSep);
  if (sep == std::string_view::npos) return false;
  std::string_view head = trim(seg.substr(0, sep));
  std::string_view rest = seg.substr(sep + kSep.size());
  size_t fence = rest.find("```");
  if (head == "function" || fence != std::string_view::npos) {
    // NAME\n```json\nARGS\n```
    size_t nl = rest.find('\n');
    std::string_view name = trim(rest.substr(0, std::min(nl, fence)));
    std::string_view args;
    if (fence != std::string_view::npos) {
      std::string_view after = rest.substr(fence + 3);
      if (after.substr(0, 4) == "json") after.remove_prefix(4);
      size_t close = after.rfind("```");
      args = close == std::string_view::npos ? after : after.substr(0, close);
    } else if (nl != std::string_view::npos) {
      args = rest.substr(nl + 1);
    }
    call.name = std::string(name);
    call.arguments = std::string(trim(args));
  } else {
    call.name = std::string(head);
    call.arguments = std::string(trim(rest));
  }
  if (call.name.empty()) return false;
  if (call.arguments.empty()) call.arguments = "{}";
  call.id = make_tool_call_id();
  return true;
}

ToolCallParser::Delta ToolCallParser::push(std::string_view text) {
  Delta d;
  pending_.append(text);
  std::string_view buf = pending_;
  while (!buf.empty()) {
    if (state_ == State::kText) {
      size_t a = buf.find(kCallsBegin), c = buf.find(kCallBegin);
      size_t pos = std::min(a, c);
      if (pos != std::string_view::npos) {
        d.content.append(buf.substr(0, pos));
        buf = buf.substr(pos + (pos == a ? kCallsBegin.size() : 0));
        state_ = State::kCalls;
        raw_.assign(pos == a ? kCallsBegin : std::string_view());
        continue;
      }
      size_t hold = std::max(partial_suffix(buf, kCallsBegin), partial_suffix(buf, kCallBegin));
      d.content.append(buf.substr(0, buf.size() - hold));
      buf = buf.substr(buf.size() - hold);
      break;
    }
    if (state_ == State::kCalls) {
      std::string_view t = trim(buf);
      if (t.substr(0, kCallsEnd.size()) == kCallsEnd) {
        buf = buf.substr(buf.find(kCallsEnd) + kCallsEnd.size());
        state_ = State::kAfter;
        continue;
      }
      size_t end = buf.find(kCallEnd);
      if (end == std::string_view::npos) break;  // wait for the rest of the call
      ToolCall call;
      std::string_view seg = buf.substr(0, end);
      raw_.append(buf.substr(0, end + kCallEnd.size()));
      if (parse_call(seg, call)) {
        d.calls.push_back(std::move(call));
        ++num_calls_;
      }
      buf = buf.substr(end + kCallEnd.size());
      continue;
    }
    // After the calls: text the model adds is content.
    d.content.append(buf);
    buf = {};
  }
  pending_ = std::string(buf);
  return d;
}

ToolCallParser::Delta ToolCallParser::finish() {
  Delta d;
  if (state_ == State::kCalls && num_calls_ == 0) {
    d.content = raw_ + pending_;
  } else if (state_ != State::kCalls) {
    d.content = pending_;
  }
  pending_.clear();
  return d;
}

}  // namespace r1::server
