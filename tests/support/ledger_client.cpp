#include "tests/support/ledger_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "tests/support/linux_guest_net.h"

namespace keel::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr uint64_t kSector = 512;

uint64_t word_at(const unsigned char* p) {
  uint64_t w = 0;
  for (int i = 7; i >= 0; --i) w = (w << 8) | p[i];
  return w;
}

// "" or what is wrong with `sector` as a record for `seq` (or a later lap).
std::string record_problem(const unsigned char* sector, uint64_t seq, uint64_t laps_of) {
  if (std::memcmp(sector, "KEELLEDG", 8) != 0) return "no record (magic)";
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned i = 0; i < 63; ++i) h = (h ^ word_at(sector + 8 * i)) * 0x100000001b3ull;
  if (h != word_at(sector + 504)) return "checksum";
  const uint64_t held = word_at(sector + 8);
  if (held % laps_of != seq % laps_of) return "record " + std::to_string(held) + " misplaced";
  if (held < seq) return "older record " + std::to_string(held);
  for (unsigned i = 0; i < 60; ++i) {
    if (word_at(sector + 24 + 8 * i) != splitmix64((held << 8) ^ i)) return "pattern";
  }
  return "";
}

}  // namespace

LedgerClient::LedgerClient(const std::string& ip, uint16_t port, std::chrono::seconds connect_wait,
                           std::chrono::seconds answer_wait) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  wake_read_.reset(p[0]);
  wake_write_.reset(p[1]);
  thread_ = std::thread([=, this] { run(ip, port, connect_wait, answer_wait); });
}

LedgerClient::~LedgerClient() {
  stop();
}

void LedgerClient::stop() {
  if (!stop_.exchange(true) && wake_write_.valid()) {
    const char b = 1;
    (void)!::write(wake_write_.get(), &b, 1);
  }
  if (thread_.joinable()) thread_.join();
}

std::string LedgerClient::boot() const {
  std::lock_guard lock(mutex_);
  return boot_;
}

std::string LedgerClient::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

bool LedgerClient::wait_beyond(uint64_t n, milliseconds limit) const {
  const auto until = Clock::now() + limit;
  while (Clock::now() < until) {
    if (acked() > n) return true;
    if (!error().empty()) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return acked() > n;
}

milliseconds LedgerClient::take_longest_answer() {
  std::lock_guard lock(mutex_);
  return std::exchange(longest_, milliseconds(0));
}

void LedgerClient::fail(const std::string& why) {
  std::lock_guard lock(mutex_);
  if (error_.empty()) error_ = why + " (after record " + std::to_string(acked()) + ")";
}

void LedgerClient::run(std::string ip, uint16_t port, std::chrono::seconds connect_wait,
                       std::chrono::seconds answer_wait) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) return fail("bad address " + ip);
  // Waits for `events` on `fd` (or the stop pipe) until `until`: true when
  // they came.
  auto wait_for = [&](int fd, short events, Clock::time_point until) {
    for (;;) {
      const auto left = std::chrono::duration_cast<milliseconds>(until - Clock::now()).count();
      if (left <= 0 || stop_) return false;
      pollfd fds[2] = {{fd, events, 0}, {wake_read_.get(), POLLIN, 0}};
      const int n = ::poll(fds, 2, static_cast<int>(left));
      if (n < 0 && errno != EINTR) return false;
      if (fds[1].revents) return false;
      if (n > 0 && fds[0].revents) return true;
    }
  };

  UniqueFd sock;
  const auto connect_until = Clock::now() + connect_wait;
  for (;;) {
    sock.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!sock.valid()) return fail(std::string("socket: ") + std::strerror(errno));
    int rc = ::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    int err = rc == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      // A guest still booting answers nothing (no ARP): the attempt is
      // cut short and made again.
      if (!wait_for(sock.get(), POLLOUT, std::min(connect_until, Clock::now() + milliseconds(500))))
        err = ETIMEDOUT;
      else {
        socklen_t len = sizeof err;
        ::getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      }
    }
    if (err == 0) break;
    if (stop_) return;
    if (Clock::now() >= connect_until)
      return fail("no connection to " + ip + ":" + std::to_string(port) + ": " +
                  std::strerror(err));
    // Refused right away (the guest is up, the program not yet): not a spin.
    if (err != ETIMEDOUT) wait_for(wake_read_.get(), POLLIN, Clock::now() + milliseconds(100));
  }
  int one = 1;
  ::setsockopt(sock.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  std::string in;
  for (uint64_t seq = 1; !stop_; ++seq) {
    const std::string request = "rec " + std::to_string(seq) + "\n";
    const auto asked = Clock::now();
    if (::send(sock.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size()))
      return fail(std::string("send: ") + std::strerror(errno));
    size_t nl;
    while ((nl = in.find('\n')) == std::string::npos) {
      if (!wait_for(sock.get(), POLLIN, asked + answer_wait)) {
        if (stop_) return;
        return fail("no answer to record " + std::to_string(seq) + " in " +
                    std::to_string(answer_wait.count()) + " s");
      }
      char buf[256];
      const ssize_t r = ::recv(sock.get(), buf, sizeof buf, 0);
      if (r == 0) return fail("the guest closed the connection");
      if (r < 0 && errno != EINTR && errno != EAGAIN)
        return fail(std::string("recv: ") + std::strerror(errno));
      if (r > 0) in.append(buf, static_cast<size_t>(r));
    }
    const std::string line = in.substr(0, nl);
    in.erase(0, nl + 1);
    const std::string want = "ack " + std::to_string(seq) + " boot=";
    if (line.rfind(want, 0) != 0)
      return fail("answer '" + line + "' to record " + std::to_string(seq));
    const std::string boot = line.substr(want.size());
    {
      std::lock_guard lock(mutex_);
      if (boot_.empty()) boot_ = boot;
      longest_ = std::max(longest_, std::chrono::duration_cast<milliseconds>(Clock::now() - asked));
    }
    if (boot != this->boot()) return fail("boot= changed from " + this->boot() + " to " + boot);
    acked_ = seq;
  }
}

std::vector<std::string> ledger_problems(const std::string& path, uint64_t acked) {
  std::vector<std::string> problems;
  std::ifstream in(path, std::ios::binary);
  if (!in) return {"cannot open " + path};
  in.seekg(0, std::ios::end);
  const uint64_t sectors = static_cast<uint64_t>(in.tellg()) / kSector;
  if (sectors == 0) return {path + " holds no sector"};
  unsigned char sector[kSector];
  for (uint64_t seq = 1; seq <= acked && problems.size() < 8; ++seq) {
    in.seekg(static_cast<std::streamoff>((seq % sectors) * kSector));
    if (!in.read(reinterpret_cast<char*>(sector), kSector)) {
      problems.push_back("record " + std::to_string(seq) + ": short read");
      in.clear();
      continue;
    }
    const std::string why = record_problem(sector, seq, sectors);
    if (!why.empty()) problems.push_back("record " + std::to_string(seq) + ": " + why);
  }
  return problems;
}

}  // namespace keel::testing
