#include "tools/migbench/udp_echo_observer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace keel::migbench {

namespace {

sockaddr_in address(const std::string& ip, unsigned port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1)
    throw std::runtime_error("not an IPv4 address: " + ip);
  return a;
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("UDP echo observer: " + what + ": " + std::strerror(errno));
}

}  // namespace

UdpEchoObserver::UdpEchoObserver(const std::string& local, const std::string& guest, unsigned port)
    : socket_(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
  if (!socket_.valid()) fail("socket");
  const sockaddr_in from = address(local, 0);
  const sockaddr_in to = address(guest, port);
  if (::bind(socket_.get(), reinterpret_cast<const sockaddr*>(&from), sizeof from) != 0)
    fail("bind " + local);
  // connect(): only the guest's answers arrive, and send() needs no address.
  if (::connect(socket_.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0)
    fail("connect " + guest);
  receiver_ = std::thread([this] { receive_loop(); });
  sender_ = std::thread([this] { send_loop(); });
}

UdpEchoObserver::~UdpEchoObserver() {
  stopping_ = true;
  sender_.join();
  receiver_.join();
}

// One datagram (its sequence number) every millisecond on an absolute
// schedule, so a slow send does not stretch the next interval.
void UdpEchoObserver::send_loop() {
  timespec next{};
  ::clock_gettime(CLOCK_MONOTONIC, &next);
  for (uint64_t seq = 0; !stopping_; ++seq) {
    // An unanswered ARP or a full queue (ECONNREFUSED, ENOBUFS): the
    // datagram is lost, as it would be on a wire.
    if (::send(socket_.get(), &seq, sizeof seq, MSG_DONTWAIT) == sizeof seq) ++sent_;
    next.tv_nsec += 1000000;
    if (next.tv_nsec >= 1000000000) {
      next.tv_nsec -= 1000000000;
      ++next.tv_sec;
    }
    while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr) == EINTR) {
    }
  }
}

void UdpEchoObserver::receive_loop() {
  while (!stopping_) {
    pollfd p{socket_.get(), POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    uint64_t seq = 0;
    if (::recv(socket_.get(), &seq, sizeof seq, MSG_DONTWAIT) != sizeof seq) continue;
    const auto at = Clock::now();
    {
      std::lock_guard guard(mutex_);
      answers_.push_back(at);
    }
    answered_.notify_all();
  }
}

bool UdpEchoObserver::wait_answering(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return answered_.wait_for(lock, timeout, [this] { return !answers_.empty(); });
}

std::vector<Clock::time_point> UdpEchoObserver::answers() const {
  std::lock_guard guard(mutex_);
  return answers_;
}

double longest_silence_ms(const std::vector<Clock::time_point>& answers, Clock::time_point from,
                          Clock::time_point to) {
  double longest = 0;
  const Clock::time_point* previous = nullptr;
  for (const auto& at : answers) {
    if (at > to) break;
    if (at >= from && previous) {
      longest =
          std::max(longest, std::chrono::duration<double, std::milli>(at - *previous).count());
    }
    previous = &at;
  }
  return longest;
}

}  // namespace keel::migbench
