// keel-agent's /metrics: Prometheus's scrape endpoint, plain HTTP/1.1 on a
// TCP address of the operator's choosing (keel-agent --metrics ADDR:PORT).
// GET (or HEAD) /metrics answers the text `body` makes at that moment;
// any other path is 404, any other method 405, a request that is not
// HTTP 400, a `body` that throws 500. `body` runs on the endpoint's one
// thread: scrapes are answered one after another. One request per connection; a client gets 5 s to
// send its request, at most 8 KiB of it; at most 8 connections at once.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <string>
#include <thread>

namespace keel::cluster {

class MetricsEndpoint {
 public:
  // Listens on `address` ("ADDR:PORT"; InputError when it cannot) and
  // serves on a thread of its own. `body` runs on that thread.
  MetricsEndpoint(const std::string& address, std::function<std::string()> body);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // "ADDR:PORT" with the port bound (when 0 was asked).
  std::string address() const;

  struct Answer {
    int status = 200;
    std::string headers_and_body;  // what goes on the wire
  };
  // The answer to a request's head (the bytes before the blank line).
  static Answer answer(const std::string& head, const std::function<std::string()>& body);

 private:
  void accept();

  boost::asio::io_context events_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::function<std::string()> body_;
  int connections_ = 0;
  std::thread thread_;
};

}  // namespace keel::cluster
