// The live-migration stream's format and sockets (migration/stream): frame
// headers, page batches, addresses, and a FrameChannel over a socket pair
// (timeouts, a peer closing midway, cancel).
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <thread>

#include "common/tcp_endpoint.h"
#include "migration/stream/frame_channel.h"
#include "migration/stream/stream_format.h"
#include "proto/migration.pb.h"

namespace keel::migration {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(FrameHeader, RoundTripsAndRefusesUnknownTypesAndHugeLengths) {
  auto bytes = encode_frame_header(FrameType::kPages, 4104);
  FrameHeader h = decode_frame_header(bytes);
  EXPECT_EQ(h.type, FrameType::kPages);
  EXPECT_EQ(h.length, 4104u);
  bytes = encode_frame_header(static_cast<FrameType>(0), 0);
  EXPECT_EQ(error_of([&] { decode_frame_header(bytes); }),
            "migration stream: unknown frame type 0");
  bytes = encode_frame_header(FrameType::kEpochAck, 2);
  EXPECT_EQ(decode_frame_header(bytes).type, FrameType::kEpochAck);
  bytes = encode_frame_header(FrameType::kKeepalive, 0);
  EXPECT_EQ(decode_frame_header(bytes).type, FrameType::kKeepalive);
  bytes = encode_frame_header(static_cast<FrameType>(16), 0);
  EXPECT_EQ(error_of([&] { decode_frame_header(bytes); }),
            "migration stream: unknown frame type 16");
  bytes = encode_frame_header(FrameType::kState, kMaxFramePayload + 1);
  EXPECT_NE(error_of([&] { decode_frame_header(bytes); }).find("state frame of 16777217 bytes"),
            std::string::npos);
}

std::string entry(uint64_t word) {
  std::string e(8, '\0');
  std::memcpy(e.data(), &word, 8);
  return e;
}

std::span<const uint8_t> span_of(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(PeerSays, KeepsOneShortPrintableLine) {
  EXPECT_EQ(peer_says("disk 0: no such file"), "disk 0: no such file");
  EXPECT_EQ(peer_says("two\nlines\x1b[2J\xff"), "two?lines?[2J?");
  const std::string flood(100000, 'x');
  EXPECT_EQ(peer_says(flood), std::string(400, 'x') + "...");
}

TEST(PageBatch, DeliversPagesAndZeroMarkersInOrder) {
  const std::string batch = entry(encode_page_entry(3, false)) + std::string(4096, 'a') +
                            entry(encode_page_entry(7, true)) + entry(encode_page_entry(0, false)) +
                            std::string(4096, 'b');
  std::vector<std::pair<uint64_t, char>> got;
  auto counts = decode_page_batch(span_of(batch), 8, [&](uint64_t page, const uint8_t* data) {
    got.emplace_back(page, data ? static_cast<char>(data[4095]) : '0');
  });
  EXPECT_EQ(counts.pages, 2u);
  EXPECT_EQ(counts.zero_pages, 1u);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], std::make_pair(uint64_t{3}, 'a'));
  EXPECT_EQ(got[1], std::make_pair(uint64_t{7}, '0'));
  EXPECT_EQ(got[2], std::make_pair(uint64_t{0}, 'b'));
}

TEST(PageBatch, RefusesEachKindOfDamageByName) {
  auto decode = [](const std::string& batch) {
    return error_of([&] { decode_page_batch(span_of(batch), 8, [](uint64_t, const uint8_t*) {}); });
  };
  EXPECT_EQ(decode(""), "migration stream: empty page batch");
  EXPECT_EQ(decode("abc"), "migration stream: page entry cut short at byte 0 of the batch");
  EXPECT_EQ(decode(entry(8) + std::string(4096, 'x')),
            "migration stream: page 8 beyond guest memory (8 pages)");
  EXPECT_EQ(decode(entry(uint64_t{1} << 60)),
            "migration stream: page entry with reserved bits set (1152921504606846976)");
  EXPECT_EQ(decode(entry(2) + "short"), "migration stream: page 2 cut short: 5 of 4096 bytes");
}

TEST(TcpEndpoint, ParsesNumericAddressesAndNamesWhatIsWrong) {
  EXPECT_EQ(parse_tcp_endpoint("tcp:127.0.0.1:4444", "address").address.ss_family, AF_INET);
  EXPECT_EQ(parse_tcp_endpoint("tcp:[::1]:0", "address").address.ss_family, AF_INET6);
  EXPECT_NE(error_of([] {
              parse_tcp_endpoint("udp:1.2.3.4:5", "address");
            }).find("only tcp: is supported"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_tcp_endpoint("tcp:1.2.3.4", "address"); }).find("no port"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { parse_tcp_endpoint("tcp:1.2.3.4:70000", "address"); }).find("port above 65535"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              parse_tcp_endpoint("tcp:example.org:80", "address");
            }).find("not an IPv4 address"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { parse_tcp_endpoint("tcp:1.2.3.4:x", "address"); }).find("port is not a number"),
      std::string::npos);
}

struct Pair {
  std::unique_ptr<FrameChannel> a, b;
};
Pair channel_pair(std::chrono::milliseconds timeout) {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  return {std::make_unique<FrameChannel>(UniqueFd(fds[0]), "the destination", timeout),
          std::make_unique<FrameChannel>(UniqueFd(fds[1]), "the source", timeout)};
}

TEST(FrameChannel, CarriesMagicMessagesAndGatheredPayloads) {
  Pair p = channel_pair(std::chrono::seconds(5));
  p.a->send_magic();
  v1::Verdict verdict;
  verdict.set_ok(true);
  verdict.set_message("fits");
  p.a->send(FrameType::kVerdict, verdict);
  std::string one = "abc", two = "defg";
  iovec parts[2] = {{one.data(), one.size()}, {two.data(), two.size()}};
  p.a->send_gathered(FrameType::kPages, parts);
  p.b->expect_magic();
  v1::Verdict got;
  p.b->receive_message(FrameType::kVerdict, got);
  EXPECT_TRUE(got.ok());
  EXPECT_EQ(got.message(), "fits");
  auto frame = p.b->receive();
  EXPECT_EQ(frame.type, FrameType::kPages);
  EXPECT_EQ(std::string(frame.payload.begin(), frame.payload.end()), "abcdefg");
  EXPECT_EQ(p.a->bytes_sent(), p.b->bytes_received());
}

TEST(FrameChannel, NamesAPeerThatHangsUpOrFallsSilent) {
  Pair p = channel_pair(std::chrono::milliseconds(200));
  EXPECT_EQ(error_of([&] { p.b->receive(); }),
            "migration stream: the source sent nothing for 200 ms (waiting for a frame "
            "header)");
  auto header = encode_frame_header(FrameType::kState, 100);
  iovec part{header.data(), header.size()};
  p.a->send_gathered(FrameType::kPages, {&part, 1});  // a frame whose payload is a header
  p.a.reset();                                        // ... then gone, mid-state
  auto frame = p.b->receive();
  EXPECT_EQ(frame.type, FrameType::kPages);
  EXPECT_EQ(
      error_of([&] { p.b->receive_message(FrameType::kState, *std::make_unique<v1::Totals>()); }),
      "migration stream: the source closed the connection (waiting for a frame header)");
}

TEST(FrameChannel, ShutdownEndsAWaitAtOnce) {
  Pair p = channel_pair(std::chrono::seconds(30));
  std::thread cancel([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    p.b->shutdown();
  });
  const auto begin = std::chrono::steady_clock::now();
  EXPECT_EQ(error_of([&] { p.b->receive(); }), "migration stream: cancelled");
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(5));
  cancel.join();
}

}  // namespace
}  // namespace keel::migration
