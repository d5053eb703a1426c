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
// running, unless it is a handover: the host that printed alone before
// printed beats all just before the other host's (a switchover's pause is
// about as long as a look, so its old copy's last line and its new copy's
// first may fall in one), and the next look sees one host print, not two.
// A partial line (the old copy's unfinished one, written as it is when it
// exits) counts only once whole.
void ConsoleWatch::loop() {
  std::map<std::pair<std::string, unsigned>, size_t> seen;  // whole lines read so far
  std::map<std::string, std::string> suspect;  // a look like a handover's, to be confirmed
  std::map<std::string, unsigned> alone;       // the host that printed alone last
  const auto started = Clock::now();
  while (!stop_) {
    for (const auto& vm : vms_) {
      struct Printed {
        unsigned host;
        bool beats;
        uint64_t low, high;  // the beats' sequence numbers
      };
      std::vector<Printed> printed;
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
        Printed p{h, false, 0, 0};
        for (const Beat& beat : beats_in(lines)) {
          p.low = p.beats ? std::min(p.low, beat.seq) : beat.seq;
          p.high = p.beats ? std::max(p.high, beat.seq) : beat.seq;
          p.beats = true;
        }
        printed.push_back(p);
      }
      // The test guest's beats decide where there are any (the tail of a
      // line split by a handover is no beat); other guests' lines count
      // whole.
      if (std::any_of(printed.begin(), printed.end(), [](const Printed& p) { return p.beats; })) {
        std::erase_if(printed, [](const Printed& p) { return !p.beats; });
      }
      std::lock_guard lock(mutex_);
      if (Clock::now() - started <= std::chrono::milliseconds(100)) continue;
      if (printed.size() <= 1) {
        suspect.erase(vm);
        if (printed.size() == 1) alone[vm] = printed.front().host;
        continue;
      }
      std::string hosts;
      for (const Printed& p : printed) hosts += " h" + std::to_string(p.host);
      // A handover: two hosts, the new one's beats right after the old
      // one's, the old one the host that printed alone before.
      std::sort(printed.begin(), printed.end(),
                [](const Printed& a, const Printed& b) { return a.low < b.low; });
      const Printed& old = printed.front();
      const Printed& next = printed.back();
      const bool handover = printed.size() == 2 && old.beats && next.beats && old.high < next.low &&
                            next.low <= old.high + 2 && (!alone.count(vm) || alone[vm] == old.host);
      if (!handover || suspect.count(vm)) {
        overlaps_.push_back(
            vm + " printed on" + hosts + " within one 20 ms look" +
            (suspect.count(vm) ? " (and on" + suspect[vm] + " in the look before)" : ""));
        suspect.erase(vm);
      } else {
        suspect[vm] = hosts;
        alone[vm] = next.host;  // from now on the old one must not print
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace keel::testing
