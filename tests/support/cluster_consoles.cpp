#include "tests/support/cluster_consoles.h"

#include <algorithm>
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

// A look at which two hosts printed whole lines of one VM is two copies
// running, unless it is a handover: the test guest's beats one host printed
// all come before the other's (a switchover's pause is about as long as a
// look, so its old copy's last line and its new copy's first may fall in
// one), and the next look sees one host print, not two. A partial line
// (the old copy's unfinished one, written as it is when it exits) counts
// only once whole.
void ConsoleWatch::loop() {
  std::map<std::pair<std::string, unsigned>, size_t> seen;  // whole lines read so far
  std::map<std::string, std::string> suspect;  // a look like a handover's, to be confirmed
  const auto started = Clock::now();
  while (!stop_) {
    for (const auto& vm : vms_) {
      std::vector<unsigned> grew;
      std::vector<std::pair<uint64_t, uint64_t>> ranges;  // seq range per host that grew
      bool all_beats = true;
      for (unsigned h = 1; h <= c_.size(); ++h) {
        const std::string text = c_.console(h, vm);
        const size_t whole = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        size_t& from = seen[{vm, h}];
        if (whole < from) from = 0;  // a new keel-vmm's console
        if (whole <= from) continue;
        std::vector<std::string> lines;
        std::istringstream in(text.substr(from, whole - from));
        for (std::string l; std::getline(in, l);) lines.push_back(l);
        from = whole;
        grew.push_back(h);
        const std::vector<Beat> b = beats_in(lines);
        if (b.empty()) {
          all_beats = false;
          continue;
        }
        uint64_t low = b.front().seq, high = b.front().seq;
        for (const Beat& beat : b) {
          low = std::min(low, beat.seq);
          high = std::max(high, beat.seq);
        }
        ranges.push_back({low, high});
      }
      std::lock_guard lock(mutex_);
      if (Clock::now() - started <= std::chrono::milliseconds(100)) continue;
      std::string hosts;
      for (unsigned h : grew) hosts += " h" + std::to_string(h);
      if (grew.size() <= 1) {
        suspect.erase(vm);
        continue;
      }
      std::sort(ranges.begin(), ranges.end());
      bool ordered = all_beats;
      for (size_t i = 1; i < ranges.size(); ++i)
        ordered = ordered && ranges[i - 1].second < ranges[i].first;
      if (!ordered || suspect.count(vm)) {
        overlaps_.push_back(
            vm + " printed on" + hosts + " within one 20 ms look" +
            (suspect.count(vm) ? " (and on" + suspect[vm] + " in the look before)" : ""));
        suspect.erase(vm);
      } else {
        suspect[vm] = hosts;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace keel::testing
