// How long requests took, in fixed buckets (25 µs to 10 s, roughly 1-2.5-5
// steps): cheap to record on a hot path, no allocation, and the same
// bounds everywhere so that samples from many VMs add up.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>

namespace keel {

class LatencyHistogram {
 public:
  // Upper bounds in seconds; requests past the last are in overflow().
  static constexpr std::array<double, 18> kBoundsSeconds = {
      25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
      25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0,  2.5,    5.0,  10.0};

  void record(std::chrono::nanoseconds took);
  // Requests that took at most kBoundsSeconds[i] and more than the bound
  // before (not cumulative).
  uint64_t bucket(size_t i) const { return buckets_[i]; }
  uint64_t overflow() const { return overflow_; }
  uint64_t count() const { return count_; }
  double sum_seconds() const { return static_cast<double>(sum_ns_) / 1e9; }

 private:
  std::array<uint64_t, kBoundsSeconds.size()> buckets_{};
  uint64_t overflow_ = 0;
  uint64_t count_ = 0;
  uint64_t sum_ns_ = 0;
};

}  // namespace keel
