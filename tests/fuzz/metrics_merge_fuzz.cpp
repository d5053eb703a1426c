// libFuzzer target: a MetricsResult from another process (what keel-agent
// gets from each of its VMMs) merged into a host's MetricSet and rendered
// (control/metric_set.h, control/prometheus_text.h). The merge either
// refuses it (std::invalid_argument) or takes it, and then every line of
// the text format is a comment or a sample of a valid name: nothing the
// input carries can break a line or forge a sample.
//
// Input: a serialized keel.api.v1.MetricsResult.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

#include "control/metric_set.h"
#include "control/prometheus_text.h"
#include "tests/fuzz/fuzz_memory.h"

using namespace keel;
namespace pb = ::keel::api::v1;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pb::MetricsResult input;
  if (!input.ParseFromArray(data, static_cast<int>(size))) return 0;
  MetricSet host;
  host.gauge("keel_host_vms", "VMs", 1);
  try {
    host.add(input, {{"vm", "fuzz"}, {"host", "h1"}});
  } catch (const std::invalid_argument&) {
    return 0;
  }
  (void)readable_metrics(host.result(), &input);
  std::istringstream text(prometheus_text(host.result()));
  std::string line;
  size_t samples = 0;
  while (std::getline(text, line)) {
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    const size_t end = line.find_first_of("{ ");
    FUZZ_CHECK(end != std::string::npos);
    FUZZ_CHECK(valid_metric_name(line.substr(0, end)));
    // Labels first: the host's, so no input can stand in for them.
    if (line.compare(0, 13, "keel_host_vms") != 0) {
      FUZZ_CHECK(line.find("{vm=\"fuzz\",host=\"h1\"") == end);
    }
    ++samples;
  }
  FUZZ_CHECK(samples >= 1);
  return 0;
}
