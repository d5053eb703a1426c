#include "cluster/metrics_endpoint.h"

#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <memory>
#include <sstream>

#include "common/error.h"
#include "common/log.h"
#include "common/tcp_endpoint.h"

namespace keel::cluster {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

constexpr size_t kMaxRequestBytes = 8192;
constexpr int kMaxConnections = 8;
constexpr auto kRequestTimeout = std::chrono::seconds(5);
// For the answer to be taken, once it is made (a slow scraper's).
constexpr auto kAnswerTimeout = std::chrono::seconds(30);

std::string response(int status, const char* reason, const std::string& type,
                     const std::string& body, bool head_only) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n";
  out += "Content-Type: " + type + "\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += "Connection: close\r\n\r\n";
  if (!head_only) out += body;
  return out;
}

tcp::endpoint endpoint_of(const std::string& address) {
  // Prometheus's way ("ADDR:PORT"), or Keel's ("tcp:ADDR:PORT").
  const TcpEndpoint parsed =
      parse_tcp_endpoint(address.rfind("tcp:", 0) == 0 ? address : "tcp:" + address, "--metrics");
  tcp::endpoint e;
  std::memcpy(e.data(), &parsed.address, parsed.length);
  e.resize(parsed.length);
  return e;
}

}  // namespace

MetricsEndpoint::Answer MetricsEndpoint::answer(const std::string& head,
                                                const std::function<std::string()>& body) {
  std::istringstream lines(head);
  std::string request_line;
  std::getline(lines, request_line);
  if (!request_line.empty() && request_line.back() == '\r') request_line.pop_back();
  std::istringstream words(request_line);
  std::string method, target, version, extra;
  words >> method >> target >> version;
  const std::string text = "text/plain; charset=utf-8";
  if (method.empty() || target.empty() || version.rfind("HTTP/1.", 0) != 0 || (words >> extra)) {
    return {400, response(400, "Bad Request", text, "not an HTTP/1.x request\n", false)};
  }
  const bool head_only = method == "HEAD";
  if (method != "GET" && !head_only) {
    std::string r = response(405, "Method Not Allowed", text, "GET /metrics\n", false);
    r.insert(r.find("\r\n") + 2, "Allow: GET, HEAD\r\n");
    return {405, r};
  }
  const std::string path = target.substr(0, target.find('?'));
  if (path != "/metrics") {
    return {404, response(404, "Not Found", text, "keel-agent serves /metrics\n", head_only)};
  }
  // Prometheus's text exposition format, version 0.0.4.
  std::string metrics;
  try {
    metrics = body();
  } catch (const std::exception& e) {
    return {500, response(500, "Internal Server Error", "text/plain; charset=utf-8",
                          std::string("no metrics: ") + e.what() + "\n", head_only)};
  }
  return {200, response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", metrics, head_only)};
}

MetricsEndpoint::MetricsEndpoint(const std::string& address, std::function<std::string()> body)
    : acceptor_(events_), body_(std::move(body)) {
  const tcp::endpoint at = endpoint_of(address);
  boost::system::error_code ec;
  acceptor_.open(at.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(at, ec);
  if (!ec) acceptor_.listen(16, ec);
  if (ec) throw InputError("--metrics " + address + ": cannot listen there: " + ec.message());
  accept();
  thread_ = std::thread([this] { events_.run(); });
}

MetricsEndpoint::~MetricsEndpoint() {
  events_.stop();
  if (thread_.joinable()) thread_.join();
}

std::string MetricsEndpoint::address() const {
  const tcp::endpoint e = acceptor_.local_endpoint();
  const std::string host = e.address().to_string();
  return (e.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(e.port());
}

void MetricsEndpoint::accept() {
  acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors, or the like: tried again shortly, not in a spin.
      auto pause = std::make_shared<asio::steady_timer>(events_, std::chrono::milliseconds(100));
      pause->async_wait([this, pause](boost::system::error_code t) {
        if (!t) accept();
      });
      return;
    }
    if (connections_ < kMaxConnections) {
      ++connections_;
      struct Exchange {
        Exchange(tcp::socket s, asio::io_context& io) : socket(std::move(s)), deadline(io) {}
        tcp::socket socket;
        asio::steady_timer deadline;
        asio::streambuf in{kMaxRequestBytes};
        std::string out;
      };
      auto x = std::make_shared<Exchange>(std::move(socket), events_);
      x->deadline.expires_after(kRequestTimeout);
      x->deadline.async_wait([x](boost::system::error_code e) {
        if (!e) x->socket.close();
      });
      // Once the exchange is over: the slot freed.
      auto done = [this, x] {
        boost::system::error_code ignored;
        x->socket.shutdown(tcp::socket::shutdown_both, ignored);
        x->socket.close(ignored);
        x->deadline.cancel();
        --connections_;
      };
      asio::async_read_until(
          x->socket, x->in, "\r\n\r\n", [this, x, done](boost::system::error_code e, size_t n) {
            // not_found: 8 KiB without the head's end, answered as not HTTP.
            if (e && e != asio::error::not_found) return done();  // gone, or too slow
            std::string head;
            if (!e) {
              const auto begin = asio::buffers_begin(x->in.data());
              head.assign(begin, begin + static_cast<std::ptrdiff_t>(n));
            }
            x->out = answer(head, body_).headers_and_body;
            // The request's deadline is over; the answer gets its own.
            x->deadline.expires_after(kAnswerTimeout);
            x->deadline.async_wait([x](boost::system::error_code t) {
              if (!t) x->socket.close();
            });
            asio::async_write(x->socket, asio::buffer(x->out),
                              [done](boost::system::error_code, size_t) { done(); });
          });
    }
    accept();
  });
}

}  // namespace keel::cluster
