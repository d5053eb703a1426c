#include "common/latency_histogram.h"

#include <algorithm>

namespace keel {

void LatencyHistogram::record(std::chrono::nanoseconds took) {
  const int64_t ns = std::max<int64_t>(took.count(), 0);
  const double seconds = static_cast<double>(ns) / 1e9;
  const auto* bound = std::lower_bound(kBoundsSeconds.begin(), kBoundsSeconds.end(), seconds);
  if (bound == kBoundsSeconds.end()) {
    ++overflow_;
  } else {
    ++buckets_[static_cast<size_t>(bound - kBoundsSeconds.begin())];
  }
  ++count_;
  sum_ns_ += static_cast<uint64_t>(ns);
}

}  // namespace keel
