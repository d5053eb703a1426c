#include "tools/migbench/pause_trace.h"

#include <algorithm>

namespace keel::migbench {

namespace {

struct Tagged {
  Clock::time_point at;
  const char* tag;
  bool console;
  const std::string* text;
};

}  // namespace

void print_pause_trace(std::FILE* out, const TraceInput& in, const std::string& beat_prefix,
                       Clock::time_point from, std::chrono::milliseconds margin) {
  std::vector<Tagged> all;
  auto add = [&](const std::vector<TimedLine>& lines, const char* tag, bool console) {
    for (const auto& l : lines)
      if (l.at >= from) all.push_back({l.at, tag, console, &l.text});
  };
  add(in.source_console, "S>", true);
  add(in.destination_console, "D>", true);
  add(in.source_errors, "S!", false);
  add(in.destination_errors, "D!", false);
  std::stable_sort(all.begin(), all.end(),
                   [](const Tagged& a, const Tagged& b) { return a.at < b.at; });
  // The pause: the longest stretch between two beats, from either side.
  // And the handover: the source's last beat to the destination's first.
  const Tagged* before = nullptr;
  Clock::time_point gap_begin = from, gap_end = from;
  Clock::time_point handover_begin{}, handover_end{};
  for (const auto& t : all) {
    if (!t.console || t.text->rfind(beat_prefix, 0) != 0) continue;
    if (before && t.at - before->at > gap_end - gap_begin) {
      gap_begin = before->at;
      gap_end = t.at;
    }
    if (before && before->tag[0] == 'S' && t.tag[0] == 'D' && handover_end == Clock::time_point{}) {
      handover_begin = before->at;
      handover_end = t.at;
    }
    before = &t;
  }
  const auto ms = [from](Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(t - from).count();
  };
  std::fprintf(out, "trace: the longest stretch between beats: %.3f to %.3f ms\n", ms(gap_begin),
               ms(gap_end));
  if (handover_end != Clock::time_point{} && handover_begin != gap_begin) {
    std::fprintf(out, "trace: the handover, shown: %.3f to %.3f ms\n", ms(handover_begin),
                 ms(handover_end));
    gap_begin = handover_begin;
    gap_end = handover_end;
  }
  for (const auto& t : all) {
    if (t.at < gap_begin - margin || t.at > gap_end + margin) continue;
    std::fprintf(out, "trace: %10.3f %s %s\n", ms(t.at), t.tag, t.text->c_str());
  }
}

}  // namespace keel::migbench
