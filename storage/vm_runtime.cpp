#include "storage/vm_runtime.h"

#include <signal.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iterator>

namespace keel::storage {

namespace fs = std::filesystem;

namespace {

std::string read_whole(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

fs::path vm_run_dir(const std::string& name) {
  const char* dir = std::getenv("KEEL_RUN_DIR");
  return fs::path(dir != nullptr && *dir != '\0' ? dir : "/run/keel") / "vms" / name;
}

fs::path vm_api_socket(const std::string& name) {
  return vm_run_dir(name) / "api.sock";
}

fs::path vm_pid_file(const std::string& name) {
  return vm_run_dir(name) / "keel-vmm.pid";
}

std::optional<pid_t> running_vmm(const std::string& name) {
  const std::string text = read_whole(vm_pid_file(name));
  char* end = nullptr;
  const long pid = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || pid <= 0 || (*end != '\n' && *end != '\0')) return std::nullopt;
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return std::nullopt;
  // The PID may have been reused: the process must be this VM's keel-vmm.
  std::string cmdline = read_whole("/proc/" + std::to_string(pid) + "/cmdline");
  for (char& c : cmdline) {
    if (c == '\0') c = ' ';
  }
  if (cmdline.find(vm_api_socket(name).string()) == std::string::npos) return std::nullopt;
  return static_cast<pid_t>(pid);
}

fs::path vm_memory_root(const VmStore& store, const std::string& name) {
  return store.current(name) / ".memory";
}

VmFiles local_vm_files(const VmStore& store, const pool::v1::Vm& vm) {
  const fs::path current = store.current(vm.name());
  VmFiles files;
  files.kernel = (current / "kernel").string();
  if (fs::exists(current / "initrd")) files.initrd = (current / "initrd").string();
  if (!vm.resume_from().empty()) {
    files.restore = (vm_memory_root(store, vm.name()) / vm.resume_from()).string();
  }
  files.disk = "path=" + (current / "disk.raw").string();
  files.seed = "path=" + (current / "seed.img").string();
  files.console = store.path(vm.name()) / "console.log";
  files.memory_root = vm_memory_root(store, vm.name());
  return files;
}

std::vector<std::string> vmm_arguments(const VmStore& store, const pool::v1::Vm& vm) {
  return vmm_arguments(vm, local_vm_files(store, vm));
}

std::vector<std::string> vmm_arguments(const pool::v1::Vm& vm, const VmFiles& files) {
  std::vector<std::string> args;
  if (!files.incoming.empty()) {
    // The machine's shape comes from the source; disks and taps from here.
    args = {"--incoming", files.incoming};
  } else if (!files.replica_of.empty()) {
    args = {"--replica-of", files.replica_of};
  } else if (!files.restore.empty()) {
    // The machine's shape comes from the snapshot; disks and taps from here.
    args = {"--restore", files.restore};
  } else {
    args = {"--kernel", files.kernel};
    if (!files.initrd.empty()) args.insert(args.end(), {"--initrd", files.initrd});
    args.insert(args.end(), {"--cmdline", vm.cmdline(), "--cpus", std::to_string(vm.cpus()),
                             "--memory", std::to_string(vm.memory_bytes() >> 20) + "M"});
  }
  if (vm.disk_bytes() != 0) {
    // The serial is what the guest reads as the disk's ID: the VM's name,
    // cut to virtio-blk's 20 bytes.
    args.insert(args.end(), {"--disk", files.disk + ",serial=" + vm.name().substr(0, 20)});
  }
  args.insert(args.end(), {"--disk", files.seed + ",readonly=on,serial=cidata"});
  if (!vm.tap().empty()) args.insert(args.end(), {"--net", "tap=" + vm.tap() + ",mac=" + vm.mac()});
  // A restored or received guest brings its own.
  if (files.restore.empty() && files.incoming.empty() && files.replica_of.empty()) {
    args.push_back("--rng");
  }
  args.insert(args.end(),
              {"--name", vm.name(), "--serial", "file=" + files.console.string(), "--api-socket",
               vm_api_socket(vm.name()).string(), "--snapshot-root", files.memory_root.string()});
  return args;
}

}  // namespace keel::storage
