// The Beast/Asio HTTP/1.1 transport (see http_server.h). Connection life:
//   read header (timer: header_timeout, limits: header bytes, request line)
//   -> read body (timer: body_timeout, limit: body bytes) -> handler
//   -> while the handler answers, a watcher read notices a client that hangs
//      up (and buffers pipelined bytes) -> response written -> next request.
#include "server/http_server.h"

#include <pthread.h>
#include <sys/resource.h>

#include <atomic>
#include <deque>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "server/api_error.h"

namespace r1::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

std::string_view HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return {};
}

namespace {

std::string reason_phrase(int status) {
  std::string_view r = http::obsolete_reason(static_cast<http::status>(status));
  return std::string(r.empty() ? "Unknown" : r);
}

std::string status_headers(int status, const Headers& headers, const std::string& content_type) {
  std::string s =
      fmt::format("HTTP/1.1 {} {}\r\nServer: r1serve\r\n", status, reason_phrase(status));
  if (!content_type.empty()) s += fmt::format("Content-Type: {}\r\n", content_type);
  for (const auto& [k, v] : headers) {
    // Header values come from us, but never let a CR/LF through.
    if (k.find_first_of("\r\n") != std::string::npos ||
        v.find_first_of("\r\n") != std::string::npos)
      continue;
    s += k;
    s += ": ";
    s += v;
    s += "\r\n";
  }
  return s;
}

}  // namespace

std::string serialize_response(const HttpResponse& r, const std::string&) {
  std::string s =
      status_headers(r.status, r.headers, r.body.empty() && r.status == 204 ? "" : r.content_type);
  s += fmt::format("Content-Length: {}\r\n", r.body.size());
  if (r.close) s += "Connection: close\r\n";
  s += "\r\n";
  s += r.body;
  return s;
}

struct HttpServer::Impl {
  HttpServerOptions opt;
  Handler handler;
  std::function<void(int)> on_status;
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
  std::atomic<size_t> connections{0};
  std::atomic<bool> accepting{true};
  int port = 0;

  Impl(HttpServerOptions o, Handler h, std::function<void(int)> s)
      : opt(std::move(o)),
        handler(std::move(h)),
        on_status(std::move(s)),
        acceptor(net::make_strand(ioc)) {}

  void do_accept();
};

namespace {

class Session;

class Exchange final : public HttpExchange {
 public:
  explicit Exchange(std::shared_ptr<Session> s, bool http10)
      : session_(std::move(s)), http10_(http10) {}
  void respond(HttpResponse r) override;
  void start_stream(int status, Headers headers, std::string content_type) override;
  void write(std::string data) override;
  void finish() override;
  void set_on_disconnect(std::function<void()> cb) override;
  bool disconnected() const override { return gone_.load(); }
  void post(std::function<void()> fn) override;
  size_t pending_bytes() const override;

  void notify_disconnect() {
    if (done_ || gone_.exchange(true)) return;
    if (on_disconnect_) {
      auto cb = std::move(on_disconnect_);
      on_disconnect_ = nullptr;
      cb();
    }
  }
  bool done() const { return done_; }

 private:
  std::shared_ptr<Session> session_;
  bool http10_;
  bool started_ = false;
  bool done_ = false;
  std::atomic<bool> gone_{false};
  std::function<void()> on_disconnect_;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket sock, HttpServer::Impl& srv)
      : sock_(std::move(sock)), timer_(sock_.get_executor()), srv_(srv) {
    beast::error_code ec;
    auto ep = sock_.remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    sock_.set_option(tcp::no_delay(true), ec);
  }
  ~Session() { srv_.connections.fetch_sub(1); }

  void start() { do_read_header(); }
  auto executor() { return sock_.get_executor(); }

  // --- writing (strand only) ---
  void send(std::string bytes, bool last) {
    if (closed_) return;
    wq_bytes_ += bytes.size();
    wq_.push_back(std::move(bytes));
    if (last) response_done_ = true;
    if (wq_bytes_ > srv_.opt.max_pending_write_bytes) {
      close();  // the client does not read: drop it
      return;
    }
    if (!writing_) do_write();
  }
  void set_close_after() { close_after_ = true; }
  size_t queued() const { return wq_bytes_; }
  void status_hook(int status) {
    if (srv_.on_status) srv_.on_status(status);
  }

 private:
  void arm_timer(std::chrono::milliseconds d) {
    timer_.expires_after(d);
    timer_.async_wait([self = shared_from_this(), gen = ++timer_gen_](beast::error_code ec) {
      if (ec || gen != self->timer_gen_ || self->closed_) return;
      self->timed_out_ = true;
      beast::error_code ignored;
      self->sock_.cancel(ignored);
      if (!self->busy_ && !self->reading_) self->close();
    });
  }
  void disarm_timer() {
    ++timer_gen_;
    timer_.cancel();
  }

  void do_read_header() {
    if (closed_) return;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(srv_.opt.max_header_bytes));
    parser_->body_limit(srv_.opt.max_body_bytes);
    timed_out_ = false;
    reading_ = true;
    arm_timer(srv_.opt.header_timeout);
    http::async_read_header(
        sock_, buf_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_read_error(ec, /*in_header=*/true);
    auto& h = parser_->get();
    if (h.target().size() > srv_.opt.max_request_line) {
      return fail(
          ApiError{414, "request target too long", "invalid_request_error", "", "uri_too_long"});
    }
    if (h[http::field::expect].size() > 0) {
      if (beast::iequals(h[http::field::expect], "100-continue")) {
        send("HTTP/1.1 100 Continue\r\n\r\n", false);
      } else {
        return fail(ApiError{417, "unsupported Expect header", "invalid_request_error", "",
                             "expectation_failed"});
      }
    }
    arm_timer(srv_.opt.body_timeout);
    http::async_read(
        sock_, buf_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_body(ec); });
  }

  void on_body(beast::error_code ec) {
    reading_ = false;
    if (ec) return on_read_error(ec, /*in_header=*/false);
    disarm_timer();
    auto msg = parser_->release();
    auto req = std::make_shared<HttpRequest>();
    req->method = std::string(msg.method_string());
    req->target = std::string(msg.target());
    size_t q = req->target.find('?');
    req->path = req->target.substr(0, q);
    if (q != std::string::npos) req->query = req->target.substr(q + 1);
    for (const auto& f : msg) {
      std::string name(f.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      req->headers.emplace_back(std::move(name), std::string(f.value()));
    }
    req->body = std::move(msg.body());
    req->keep_alive = msg.keep_alive();
    req->remote = remote_;
    req->arrival = std::chrono::steady_clock::now();
    keep_alive_ = req->keep_alive;
    busy_ = true;
    response_done_ = false;
    exchange_ = std::make_shared<Exchange>(shared_from_this(), msg.version() < 11);
    watch();
    auto ex = exchange_;
    srv_.handler(std::move(req), std::move(ex));
  }

  void on_read_error(beast::error_code ec, bool in_header) {
    reading_ = false;
    if (closed_) return;
    bool have_bytes = buf_.size() > 0 || (parser_ && parser_->got_some());
    if (ec == http::error::header_limit) {
      // The parser fills in the target once the request line is complete.
      bool line_done = parser_ && !parser_->get().target().empty();
      if (!line_done) {
        return fail(
            ApiError{414, "request line too long", "invalid_request_error", "", "uri_too_long"});
      }
      return fail(
          ApiError{431, fmt::format("request headers exceed {} bytes", srv_.opt.max_header_bytes),
                   "invalid_request_error", "", "header_too_large"});
    }
    if (ec == http::error::body_limit) {
      return fail(ApiError{413,
                           fmt::format("request body exceeds {} bytes", srv_.opt.max_body_bytes),
                           "invalid_request_error", "", "body_too_large"});
    }
    if (timed_out_) {
      if (!have_bytes && in_header) return close();  // idle keep-alive connection
      return fail(ApiError{
          408, in_header ? "timed out reading the request headers" : "timed out reading the body",
          "invalid_request_error", "", "request_timeout"});
    }
    if (ec == http::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == net::error::operation_aborted) {
      if (ec == http::error::end_of_stream || !have_bytes) return close();
      // EOF in the middle of a message: the client shut its sending side;
      // it may still read our answer.
      return fail(ApiError{
          400, "incomplete request (connection closed mid-message; Content-Length mismatch?)",
          "invalid_request_error", "", "bad_request"});
    }
    if (ec == http::error::partial_message) {
      return fail(ApiError{400, "incomplete request (Content-Length larger than the body?)",
                           "invalid_request_error", "", "bad_request"});
    }
    return fail(ApiError{400, fmt::format("malformed HTTP request: {}", ec.message()),
                         "invalid_request_error", "", "bad_request"});
  }

  // Answers a framing error and closes the connection.
  void fail(const ApiError& e) {
    disarm_timer();
    reading_ = false;
    busy_ = true;
    HttpResponse r;
    r.status = e.status;
    r.body = e.to_json();
    r.close = true;
    close_after_ = true;
    status_hook(e.status);
    send(serialize_response(r), true);
  }

  // While a request is handled: read so that a hang-up is noticed at once.
  void watch() {
    if (watching_ || closed_) return;
    // Bytes already buffered are the client's next (pipelined) request: leave the
    // socket alone so after_response parses them at once. A read left pending here
    // would hold that request until the idle timer closes the connection.
    if (buf_.size() > 0) return;
    watching_ = true;
    auto mb = buf_.prepare(4096);
    sock_.async_read_some(mb, [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->watching_ = false;
      if (ec) {
        if (self->busy_ || !self->timed_out_ || true) self->close();
        return;
      }
      self->buf_.commit(n);
      if (self->busy_) {
        // The client's next request began while this one is still answered: keep
        // it for after_response (see above). A hang-up from here on shows as a
        // failed write.
        return;
      } else if (self->want_next_) {
        self->want_next_ = false;
        self->do_read_header();
      }
    });
  }

  void do_write() {
    writing_ = true;
    net::async_write(sock_, net::buffer(wq_.front()),
                     [self = shared_from_this()](beast::error_code ec, size_t n) {
                       self->writing_ = false;
                       if (ec || self->closed_) return self->close();
                       self->wq_bytes_ -= self->wq_.front().size();
                       self->wq_.pop_front();
                       if (!self->wq_.empty()) return self->do_write();
                       if (self->response_done_) self->after_response();
                     });
  }

  void after_response() {
    busy_ = false;
    response_done_ = false;
    if (exchange_) exchange_.reset();
    if (close_after_ || !keep_alive_) {
      beast::error_code ec;
      sock_.shutdown(tcp::socket::shutdown_send, ec);
      if (!watching_) {
        // Give the peer a moment to read before the socket goes.
        arm_timer(std::chrono::milliseconds(2000));
        watch_until_eof();
      } else {
        arm_timer(std::chrono::milliseconds(2000));
      }
      return;
    }
    if (watching_) {
      want_next_ = true;
      arm_timer(srv_.opt.header_timeout);
    } else {
      do_read_header();
    }
  }

  void watch_until_eof() {
    watching_ = true;
    auto mb = buf_.prepare(4096);
    sock_.async_read_some(mb, [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->watching_ = false;
      if (ec) return self->close();
      self->buf_.commit(n);
      self->buf_.consume(self->buf_.size());
      self->watch_until_eof();
    });
  }

 public:
  void close() {
    if (closed_) return;
    closed_ = true;
    disarm_timer();
    beast::error_code ec;
    sock_.shutdown(tcp::socket::shutdown_both, ec);
    sock_.close(ec);
    // wq_ stays: a write in flight still points into its front buffer.
    if (exchange_) {
      auto ex = std::move(exchange_);
      ex->notify_disconnect();
    }
  }
  bool closed() const { return closed_; }

 private:
  tcp::socket sock_;
  net::steady_timer timer_;
  HttpServer::Impl& srv_;
  std::string remote_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::deque<std::string> wq_;
  size_t wq_bytes_ = 0;
  uint64_t timer_gen_ = 0;
  bool writing_ = false, closed_ = false, close_after_ = false, keep_alive_ = true;
  bool busy_ = false, watching_ = false, want_next_ = false, reading_ = false, timed_out_ = false;
  bool response_done_ = false;
  std::shared_ptr<Exchange> exchange_;
};

void Exchange::respond(HttpResponse r) {
  if (done_ || started_) return;
  done_ = true;
  if (session_->closed()) return;
  session_->status_hook(r.status);
  if (r.close) session_->set_close_after();
  session_->send(serialize_response(r), true);
}

void Exchange::start_stream(int status, Headers headers, std::string content_type) {
  if (done_ || started_) return;
  started_ = true;
  session_->status_hook(status);
  headers.emplace_back("Cache-Control", "no-cache");
  headers.emplace_back("X-Accel-Buffering", "no");
  std::string s = status_headers(status, headers, content_type);
  if (http10_) {
    s += "Connection: close\r\n\r\n";
    session_->set_close_after();
  } else {
    s += "Transfer-Encoding: chunked\r\n\r\n";
  }
  session_->send(std::move(s), false);
}

void Exchange::write(std::string data) {
  if (done_ || !started_ || data.empty()) return;
  if (http10_) return session_->send(std::move(data), false);
  std::string chunk = fmt::format("{:x}\r\n", data.size());
  chunk += data;
  chunk += "\r\n";
  session_->send(std::move(chunk), false);
}

void Exchange::finish() {
  if (done_ || !started_) return;
  done_ = true;
  session_->send(http10_ ? std::string() : std::string("0\r\n\r\n"), true);
}

void Exchange::set_on_disconnect(std::function<void()> cb) {
  if (gone_.load() || session_->closed()) {
    gone_ = true;
    if (!done_) cb();
    return;
  }
  on_disconnect_ = std::move(cb);
}

void Exchange::post(std::function<void()> fn) {
  net::post(session_->executor(), std::move(fn));
}

size_t Exchange::pending_bytes() const {
  return session_->queued();
}

}  // namespace

void HttpServer::Impl::do_accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket sock) {
    if (!accepting.load() || !acceptor.is_open()) return;
    if (!ec) {
      if (connections.load() >= opt.max_connections) {
        beast::error_code ignored;
        sock.close(ignored);
      } else {
        connections.fetch_add(1);
        std::make_shared<Session>(std::move(sock), *this)->start();
      }
    } else if (ec == net::error::no_descriptors) {
      // Out of file descriptors: back off briefly instead of spinning.
      auto t = std::make_shared<net::steady_timer>(ioc, std::chrono::milliseconds(50));
      t->async_wait([this, t](beast::error_code) { do_accept(); });
      return;
    }
    do_accept();
  });
}

HttpServer::HttpServer(HttpServerOptions options, Handler handler,
                       std::function<void(int)> on_status)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler), std::move(on_status))) {}

HttpServer::~HttpServer() {
  stop();
}

Status HttpServer::listen() {
  // Many clients need many descriptors: raise the soft limit to the hard one.
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  beast::error_code ec;
  auto addr = net::ip::make_address(impl_->opt.host, ec);
  if (ec)
    return make_error(ErrorCode::kInvalidArgument, "--host {}: not an IP address", impl_->opt.host);
  tcp::endpoint ep(addr, static_cast<unsigned short>(impl_->opt.port));
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return make_error(ErrorCode::kIo, "cannot listen on {}:{}: {}", impl_->opt.host,
                      impl_->opt.port, ec.message());
  }
  impl_->port = a.local_endpoint().port();
  return Status();
}

int HttpServer::port() const {
  return impl_->port;
}

void HttpServer::start() {
  impl_->work.emplace(impl_->ioc.get_executor());
  net::post(impl_->acceptor.get_executor(), [this] { impl_->do_accept(); });
  int n = std::max(1, impl_->opt.io_threads);
  for (int i = 0; i < n; ++i) {
    impl_->threads.emplace_back([this] {
      // Named so that profiles and bench/server tell HTTP work from engine work.
      pthread_setname_np(pthread_self(), "r1-http");
      impl_->ioc.run();
    });
  }
}

void HttpServer::stop_accepting() {
  impl_->accepting = false;
  net::post(impl_->acceptor.get_executor(), [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
  });
}

void HttpServer::stop() {
  if (!impl_) return;
  impl_->accepting = false;
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads) {
    if (t.joinable()) t.join();
  }
  impl_->threads.clear();
}

size_t HttpServer::connections() const {
  return impl_->connections.load();
}

void HttpServer::schedule(std::chrono::milliseconds delay, std::function<void()> fn) {
  auto t = std::make_shared<net::steady_timer>(impl_->ioc, delay);
  t->async_wait([t, fn = std::move(fn)](beast::error_code ec) {
    if (!ec) fn();
  });
}

}  // namespace r1::server
