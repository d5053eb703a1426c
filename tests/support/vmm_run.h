// Runs keel-vmm as a child process and reads what the guest printed.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace keel::testing {

struct VmmRun {
  int exit_code;
  bool timed_out;
  std::vector<std::string> lines;  // the guest's console, line by line
  std::string err;                 // keel-vmm's own messages

  // First console line that starts with `prefix`.
  std::optional<std::string> line(const std::string& prefix) const;
  std::vector<std::string> all_lines(const std::string& prefix) const;
  std::string console() const;
};

// Lines as one text, each ended by a newline.
std::string join_lines(const std::vector<std::string>& lines);

// Exit code, console and stderr, for failure messages.
std::string describe(const VmmRun& run);

// keel-vmm with `args`, killed after `timeout`.
VmmRun run_vmm(const std::vector<std::string>& args,
               std::chrono::seconds timeout = std::chrono::seconds(120),
               const std::vector<std::string>& extra_env = {});

// The same with another keel-vmm executable (keel-vmm-testhooks).
VmmRun run_vmm_at(const std::string& vmm, const std::vector<std::string>& args,
                  std::chrono::seconds timeout = std::chrono::seconds(120),
                  const std::vector<std::string>& extra_env = {});

// "key=value" words of a console line.
std::map<std::string, std::string> fields(const std::string& line);
uint64_t field_u64(const std::string& line, const std::string& key);

// Heartbeat lines ("PREFIXseq=N t_us=T") among `lines`: the test guest's by
// default, "keel-guest: beat " for the Linux guest image's.
struct Beat {
  uint64_t seq, t_us;
};
std::vector<Beat> beats_in(const std::vector<std::string>& lines,
                           const std::string& prefix = "testos: beat ");

// A kernel message printed while a program wrote a line lands inside it
// ("keel-guest: beat[    6.770314] IPv6: ... ready", then " seq=4 ..."):
// such a line put back together, the message on its own line after it.
std::vector<std::string> mend_kernel_interruptions(const std::vector<std::string>& lines);

// The lines that start with `prefix` (lines a kernel message cut, mended).
std::vector<std::string> with_prefix(const std::vector<std::string>& lines,
                                     const std::string& prefix);

const char* vmm_path();
const char* testos_bzimage();
const char* testos_elf();

}  // namespace keel::testing
