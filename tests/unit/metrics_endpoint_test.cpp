// keel-agent's /metrics endpoint (cluster/metrics_endpoint.h) on a real
// loopback port: what a scraper gets, and what anything else gets.
#include "cluster/metrics_endpoint.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/tcp_endpoint.h"
#include "common/unique_fd.h"
#include "tests/support/http_client.h"

namespace keel::cluster {
namespace {

using testing::http_exchange;

TEST(MetricsEndpoint, AScrapeGetsTheTextAndAnythingElseAClearNo) {
  std::atomic<int> scrapes{0};
  MetricsEndpoint endpoint("127.0.0.1:0", [&] {
    ++scrapes;
    return std::string("# TYPE keel_x gauge\nkeel_x 1\n");
  });
  const std::string at = endpoint.address();
  ASSERT_EQ(at.rfind("127.0.0.1:", 0), 0u) << at;

  const std::string ok = http_exchange(at, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << ok;
  EXPECT_NE(ok.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos);
  EXPECT_NE(ok.find("Content-Length: 29\r\n"), std::string::npos) << ok;
  EXPECT_EQ(ok.substr(ok.find("\r\n\r\n") + 4), "# TYPE keel_x gauge\nkeel_x 1\n");
  EXPECT_EQ(http_exchange(at, "GET /metrics?x=1 HTTP/1.0\r\n\r\n").rfind("HTTP/1.1 200", 0), 0u);

  const std::string head = http_exchange(at, "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << head;
  EXPECT_EQ(head.substr(head.find("\r\n\r\n") + 4), "") << "HEAD has no body";

  const std::string post = http_exchange(at, "POST /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(post.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0), 0u) << post;
  EXPECT_NE(post.find("Allow: GET, HEAD\r\n"), std::string::npos) << post;
  EXPECT_EQ(http_exchange(at, "GET /other HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(http_exchange(at, "hello\r\n\r\n").rfind("HTTP/1.1 400", 0), 0u);
  EXPECT_EQ(http_exchange(at, "GET /metrics SMTP/1.1\r\n\r\n").rfind("HTTP/1.1 400", 0), 0u);
  // A head past 8 KiB is not waited out.
  EXPECT_EQ(http_exchange(at, "GET /metrics HTTP/1.1\r\nX: " + std::string(9000, 'a') + "\r\n\r\n")
                .rfind("HTTP/1.1 400", 0),
            0u);
  EXPECT_EQ(scrapes.load(), 3) << "only the GETs and the HEAD of /metrics made the text";
}

// Idle connections hold at most 8 slots; past them a client is let go at
// once, and a scrape gets through again once they are gone.
TEST(MetricsEndpoint, IdleClientsTakeAtMostEightSlots) {
  MetricsEndpoint endpoint("127.0.0.1:0", [] { return std::string("keel_x 1\n"); });
  const auto at = parse_tcp_endpoint("tcp:" + endpoint.address(), "test");
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 8; ++i) idle.push_back(connect_tcp(at, std::chrono::seconds(5)));
  UniqueFd ninth = connect_tcp(at, std::chrono::seconds(5));
  pollfd p{ninth.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "the ninth was not let go";
  char byte;
  EXPECT_EQ(::read(ninth.get(), &byte, 1), 0);
  idle.clear();
  bool answered = false;
  for (int i = 0; i < 50 && !answered; ++i) {
    answered = http_exchange(endpoint.address(), "GET /metrics HTTP/1.1\r\n\r\n")
                   .rfind("HTTP/1.1 200", 0) == 0;
    if (!answered) ::usleep(20000);  // the slots free as the server sees the closes
  }
  EXPECT_TRUE(answered);
}

TEST(MetricsEndpoint, AnAddressItCannotListenOnIsRefused) {
  EXPECT_THROW(MetricsEndpoint("not-an-address", [] { return std::string(); }), InputError);
}

}  // namespace
}  // namespace keel::cluster
