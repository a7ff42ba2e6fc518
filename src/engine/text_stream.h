// TextStream: the text of one sample as it streams. Token ids go in; text
// that is final comes out, through the incremental detokenizer, with stop
// strings cut off and any tail that may still become a stop string held back
// until it cannot.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/incremental_detokenizer.h"

namespace r1::engine {

class TextStream {
 public:
  // `tokenizer` may be null: then no text is produced and there are no stops.
  TextStream(std::shared_ptr<const tok::Tokenizer> tokenizer, bool skip_special_tokens,
             std::vector<std::string> stop_strings);

  // Adds one token. Returns the text that became final. When `match` is
  // false (min_tokens not reached) stop strings are neither matched nor held.
  std::string push(int32_t id, bool match = true);
  // Ends the stream (not after a stop string): everything still held.
  std::string finish();
  // The stop string that ended the text, once one appeared.
  const std::optional<std::string>& stopped_by() const { return stopped_by_; }
  bool has_text() const { return detok_.has_value(); }

 private:
  std::string release(bool match);

  std::optional<tok::IncrementalDetokenizer> detok_;
  std::vector<std::string> stops_;
  std::string held_;
  std::optional<std::string> stopped_by_;
};

}  // namespace r1::engine
