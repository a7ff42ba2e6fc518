// HttpServer: the HTTP/1.1 transport (Boost.Beast parser over Asio sockets; the
// only file that includes Beast). A few I/O threads serve every connection
// asynchronously; each connection runs on its own strand. Framing problems
// are answered here (400/408/413/414/431, OpenAI-shaped) with caps on header
// bytes, body bytes and header time; well-formed requests go to one Handler
// with an HttpExchange to answer through, in full or as a chunked stream.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace r1::server {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;
  std::string target;
  std::string path;  // target without the query
  std::string query;
  Headers headers;  // names in lower case
  std::string body;
  bool keep_alive = true;
  std::string remote;
  std::chrono::steady_clock::time_point arrival;
  std::string_view header(std::string_view lower_name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  Headers headers;
  bool close = false;  // close the connection after this response
};

// One request's reply channel. Every method must be called on the
// connection's strand: the handler is called there, and post() gets there
// from other threads (engine callbacks).
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual void respond(HttpResponse r) = 0;
  // Starts a chunked response (text/event-stream unless said otherwise).
  virtual void start_stream(int status, Headers headers,
                            std::string content_type = "text/event-stream") = 0;
  virtual void write(std::string data) = 0;
  virtual void finish() = 0;
  // `cb` runs (on the strand) if the client goes away before the response ends.
  virtual void set_on_disconnect(std::function<void()> cb) = 0;
  virtual bool disconnected() const = 0;
  virtual void post(std::function<void()> fn) = 0;
  // Bytes queued but not yet written to the socket.
  virtual size_t pending_bytes() const = 0;
};

using Handler = std::function<void(std::shared_ptr<HttpRequest>, std::shared_ptr<HttpExchange>)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  int io_threads = 2;
  size_t max_header_bytes = 16 << 10;  // request line + headers
  size_t max_request_line = 8 << 10;
  size_t max_body_bytes = 8 << 20;
  std::chrono::milliseconds header_timeout{10000};  // idle keep-alive + whole header
  std::chrono::milliseconds body_timeout{30000};
  size_t max_connections = 16384;
  size_t max_pending_write_bytes = 16 << 20;  // a client that does not read is dropped
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, Handler handler, std::function<void(int)> on_status);
  ~HttpServer();
  Status listen();  // binds; port() is then the real port
  int port() const;
  void start();  // starts the I/O threads
  void stop_accepting();
  void stop();  // stops the I/O threads (joins)
  size_t connections() const;
  // Runs fn on the server's own executor after `delay` (for timers).
  void schedule(std::chrono::milliseconds delay, std::function<void()> fn);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Builds a full response's bytes (status line, headers, Content-Length, body).
std::string serialize_response(const HttpResponse& r,
                               const std::string& request_id_header_value = "");

}  // namespace r1::server
