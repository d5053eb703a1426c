#include "tests/support/vmm_run.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/child_process.h"

namespace keel::testing {

const char* vmm_path() {
  return KEEL_VMM_PATH;
}
const char* testos_bzimage() {
  return KEEL_TESTOS_BZIMAGE;
}
const char* testos_elf() {
  return KEEL_TESTOS_ELF;
}

std::optional<std::string> VmmRun::line(const std::string& prefix) const {
  for (const auto& l : lines) {
    if (l.rfind(prefix, 0) == 0) return l;
  }
  return std::nullopt;
}

std::vector<std::string> VmmRun::all_lines(const std::string& prefix) const {
  return with_prefix(lines, prefix);
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string all;
  for (const auto& l : lines) all += l + "\n";
  return all;
}

std::string VmmRun::console() const {
  return join_lines(lines);
}

VmmRun run_vmm(const std::vector<std::string>& args, std::chrono::seconds timeout,
               const std::vector<std::string>& extra_env) {
  return run_vmm_at(vmm_path(), args, timeout, extra_env);
}

namespace {

std::string read_small_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.pop_back();
  return text;
}

// `pid` and every process below it (a jailed keel-vmm runs in a child).
std::vector<pid_t> process_tree(pid_t root) {
  std::vector<pid_t> tree{root};
  for (size_t i = 0; i < tree.size(); ++i) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
      const std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::string stat = read_small_file(e.path() / "stat");
      auto close = stat.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(stat.substr(close + 2));
      std::string state;
      pid_t ppid = 0;
      rest >> state >> ppid;
      if (ppid == tree[i]) tree.push_back(std::stoi(name));
    }
  }
  return tree;
}

// Each thread of the VMM's processes: name, scheduler state, CPU time in
// ticks, where in the kernel it sleeps and the system call it is in. Read
// when a guest vCPU stalls, twice a second apart, it tells a vCPU thread
// that spins in KVM from one that sleeps waiting for a wake-up that never
// came.
std::string thread_states(pid_t root) {
  std::string out;
  for (pid_t pid : process_tree(root)) {
    const std::filesystem::path task = "/proc/" + std::to_string(pid) + "/task";
    std::error_code ec;
    for (const auto& t : std::filesystem::directory_iterator(task, ec)) {
      std::string stat = read_small_file(t.path() / "stat");
      auto close = stat.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(stat.substr(close + 2));
      std::vector<std::string> f;
      for (std::string w; rest >> w;) f.push_back(w);
      if (f.size() < 13) continue;
      out += "  " + std::to_string(pid) + "/" + t.path().filename().string() + " " +
             read_small_file(t.path() / "comm") + " state=" + f[0] + " utime=" + f[11] +
             " stime=" + f[12] + " wchan=" + read_small_file(t.path() / "wchan") +
             " syscall=" + read_small_file(t.path() / "syscall") + "\n";
    }
  }
  return out;
}

bool inside_box() {
  const char* where = std::getenv("KEEL_KVM_WHERE");
  return where != nullptr && std::string(where) == "box";
}

}  // namespace

VmmRun run_vmm_at(const std::string& vmm, const std::vector<std::string>& args,
                  std::chrono::seconds timeout, const std::vector<std::string>& extra_env) {
  std::vector<std::string> argv{vmm};
  argv.insert(argv.end(), args.begin(), args.end());
  // In the KVM test host a guest's vCPU sometimes goes silent (the kernel
  // reports an RCU stall and the run hangs to its timeout). What the VMM's
  // threads were doing at the first report is kept for the failure message;
  // the run goes on (a guest may recover from a stall).
  std::string stall_report;
  size_t scanned = 0;
  CommandWatch watch = [&](const CommandResult& so_far, pid_t pid) {
    if (!inside_box() || !stall_report.empty()) return false;
    auto at = so_far.out.find("detected stall", scanned > 64 ? scanned - 64 : 0);
    scanned = so_far.out.size();
    if (at == std::string::npos) return false;
    stall_report = "keel-vmm's threads when the guest reported a stall:\n" + thread_states(pid);
    std::this_thread::sleep_for(std::chrono::seconds(1));  // a second sample to compare with
    stall_report += "and a second later:\n" + thread_states(pid);
    return false;
  };
  auto result = run_command(argv, timeout, extra_env, watch);
  VmmRun run{result.exit_code, result.timed_out, {}, result.err + stall_report};
  std::istringstream in(result.out);
  for (std::string l; std::getline(in, l);) {
    if (!l.empty() && l.back() == '\r') l.pop_back();
    run.lines.push_back(l);
  }
  return run;
}

std::map<std::string, std::string> fields(const std::string& line) {
  std::map<std::string, std::string> out;
  std::istringstream in(line);
  for (std::string word; in >> word;) {
    if (auto eq = word.find('='); eq != std::string::npos)
      out[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return out;
}

uint64_t field_u64(const std::string& line, const std::string& key) {
  auto f = fields(line);
  auto it = f.find(key);
  if (it == f.end()) throw std::runtime_error("no " + key + "= in line: " + line);
  return std::stoull(it->second, nullptr, 0);
}

std::string describe(const VmmRun& run) {
  return "exit " + std::to_string(run.exit_code) + (run.timed_out ? " (timed out)" : "") +
         "\nconsole:\n" + run.console() + "stderr:\n" + run.err;
}

std::vector<Beat> beats_in(const std::vector<std::string>& lines, const std::string& prefix) {
  std::vector<Beat> out;
  for (const auto& l : with_prefix(lines, prefix))
    out.push_back({field_u64(l, "seq"), field_u64(l, "t_us")});
  return out;
}

namespace {

// Where a kernel message (printk's time stamp, "[    6.770314] ") starts
// inside a line rather than at its start; npos when none does.
size_t kernel_message_inside(const std::string& line) {
  auto digit = [&](size_t i) { return i < line.size() && line[i] >= '0' && line[i] <= '9'; };
  for (size_t at = line.find('[', 1); at != std::string::npos; at = line.find('[', at + 1)) {
    size_t i = at + 1;
    while (i < line.size() && line[i] == ' ') ++i;
    const size_t whole = i;
    while (digit(i)) ++i;
    if (i == whole || i >= line.size() || line[i] != '.') continue;
    const size_t fraction = ++i;
    while (digit(i)) ++i;
    if (i - fraction == 6 && i < line.size() && line[i] == ']') return at;
  }
  return std::string::npos;
}

}  // namespace

std::vector<std::string> mend_kernel_interruptions(const std::vector<std::string>& lines) {
  std::vector<std::string> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t at = kernel_message_inside(lines[i]);
    if (at == std::string::npos || i + 1 == lines.size()) {
      out.push_back(lines[i]);
      continue;
    }
    out.push_back(lines[i].substr(0, at) + lines[i + 1]);
    out.push_back(lines[i].substr(at));
    ++i;
  }
  return out;
}

std::vector<std::string> with_prefix(const std::vector<std::string>& lines,
                                     const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& l : mend_kernel_interruptions(lines)) {
    if (l.rfind(prefix, 0) == 0) out.push_back(l);
  }
  return out;
}

}  // namespace keel::testing
