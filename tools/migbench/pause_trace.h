// keel-migbench --trace: the lines around a run's pause on one clock, this
// program's: both consoles and both VMMs' stderr (Keel's pause steps with
// KEEL_LOG=debug), to see where a pause went.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "tools/migbench/timed_console.h"

namespace keel::migbench {

struct TraceInput {
  std::vector<TimedLine> source_console, destination_console;
  std::vector<TimedLine> source_errors, destination_errors;
};

// The lines from `margin` before the handover (the source's last line
// starting with `beat_prefix` after `from` to the destination's first),
// else the longest stretch without one, to `margin` after it, each as
// milliseconds since `from`, then S or D (source, destination) and > or !
// (console, stderr).
void print_pause_trace(std::FILE* out, const TraceInput& in, const std::string& beat_prefix,
                       Clock::time_point from, std::chrono::milliseconds margin);

}  // namespace keel::migbench
