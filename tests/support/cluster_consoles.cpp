#include "tests/support/cluster_consoles.h"

#include <chrono>
#include <fstream>
#include <map>
#include <sstream>

namespace keel::testing {

using Clock = std::chrono::steady_clock;

std::vector<Beat> beats(const TestCluster& c, unsigned host, const std::string& vm) {
  std::vector<std::string> lines;
  // Whole lines only: the guest may be writing the last one now.
  std::string text = c.console(host, vm);
  text.resize(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return beats_in(lines);
}

bool beats_after(const TestCluster& c, unsigned host, const std::string& vm, size_t from) {
  const std::string text = c.console(host, vm);
  return text.size() > from && text.find("testos: beat ", from) != std::string::npos;
}

std::string agents_said(const TestCluster& c, const std::string& vm) {
  std::string out;
  for (unsigned h = 1; h <= c.size(); ++h) {
    std::ifstream log(c.log_path(h));
    std::vector<std::string> lines;
    for (std::string line; std::getline(log, line);) {
      if (line.find(vm) != std::string::npos) lines.push_back(line);
    }
    const size_t from = lines.size() > 20 ? lines.size() - 20 : 0;
    out += "-- h" + std::to_string(h) + ":\n";
    for (size_t i = from; i < lines.size(); ++i) out += lines[i] + "\n";
  }
  return out;
}

ConsoleWatch::ConsoleWatch(const TestCluster& c, std::vector<std::string> vms)
    : c_(c), vms_(std::move(vms)), thread_([this] { loop(); }) {}

ConsoleWatch::~ConsoleWatch() {
  stop_ = true;
  thread_.join();
}

std::vector<std::string> ConsoleWatch::overlaps() {
  std::lock_guard lock(mutex_);
  return overlaps_;
}

void ConsoleWatch::loop() {
  std::map<std::pair<std::string, unsigned>, size_t> size;
  const auto started = Clock::now();
  while (!stop_) {
    for (const auto& vm : vms_) {
      std::vector<unsigned> grew;
      for (unsigned h = 1; h <= c_.size(); ++h) {
        const size_t now = c_.console(h, vm).size();
        if (now > size[{vm, h}]) grew.push_back(h);
        size[{vm, h}] = now;
      }
      std::lock_guard lock(mutex_);
      if (grew.size() > 1 && Clock::now() - started > std::chrono::milliseconds(100)) {
        std::string hosts;
        for (unsigned h : grew) hosts += " h" + std::to_string(h);
        overlaps_.push_back(vm + " printed on" + hosts + " within one 20 ms look");
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace keel::testing
