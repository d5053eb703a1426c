#include "tools/keelctl/pool_commands.h"

#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "cluster/vmm_launch.h"
#include "common/error.h"
#include "common/size_parse.h"
#include "common/unique_fd.h"
#include "control/control_client.h"
#include "storage/image_store.h"
#include "storage/leftover_sweep.h"
#include "storage/nbd_server.h"
#include "storage/pool.h"
#include "storage/pool_nbd_catalog.h"
#include "storage/vm_runtime.h"
#include "storage/vm_store.h"
#include "tools/keelctl/cluster_commands.h"

namespace keel {

const char* const kPoolUsage =
    "Pool, images and VMs on this host (--pool PATH, default $KEEL_POOL):\n"
    "  pool init PATH                       make PATH (on Btrfs) a pool\n"
    "  image import NAME [--disk FILE] [--kernel K [--initrd I]] [--cmdline TEXT]\n"
    "                                       a raw or qcow2 disk (converted to raw),\n"
    "                                       a kernel or both, as a read-only image\n"
    "  image list | image show NAME | image delete NAME\n"
    "  vm create NAME --image IMAGE [--cpus N] [--memory SIZE] [--disk-size SIZE]\n"
    "      [--hostname H] [--ip ADDR/PREFIX [--gateway G]] [--ssh-key FILE]...\n"
    "      [--user-data FILE] [--tap TAP]   a snapshot of the image, configured by\n"
    "                                       cloud-init from a seed disk Keel writes\n"
    "  vm list | vm show NAME | vm delete NAME\n"
    "  vm start NAME                        run its keel-vmm in the background\n"
    "                                       (socket: /run/keel/vms/NAME/api.sock)\n"
    "  vm stop NAME [--timeout SEC] [--force]  ACPI power button; --force kills\n"
    "  vm snapshot NAME SNAP [--memory]     read-only snapshot of the disks; --memory:\n"
    "                                       of a running VM, its memory and devices too\n"
    "                                       (paused meanwhile), resumed by the next\n"
    "                                       start after a rollback to it\n"
    "  vm snapshots NAME | vm rollback NAME SNAP\n"
    "  vm delete-snapshot NAME SNAP\n"
    "  vm clone NAME NEW [--from-snapshot SNAP] [--hostname H]\n"
    "  nbd serve --listen ADDR:PORT --allow VM=CLIENT[,CLIENT...]...\n"
    "                                       export the VMs' disks over NBD (export\n"
    "                                       name: the VM's) to the clients allowed\n"
    "                                       (VM * for every VM) until SIGINT/SIGTERM\n"
    "  --json prints records as JSON.\n"
    "Without --pool and $KEEL_POOL, vm create|start|stop|migrate|list|show|delete\n"
    "work on the cluster's VMs through keel-agent (see keelctl cluster --help).\n";

namespace {

namespace fs = std::filesystem;

struct UsageError {
  std::string message;
};

const std::set<std::string> kValued = {"--pool",          "--disk",      "--kernel",   "--initrd",
                                       "--cmdline",       "--image",     "--cpus",     "--memory",
                                       "--disk-size",     "--hostname",  "--ip",       "--gateway",
                                       "--ssh-key",       "--user-data", "--tap",      "--timeout",
                                       "--from-snapshot", "--listen",    "--allow",    "--host",
                                       "--storage-host",  "--agent",     "--wait",     "--to",
                                       "--downtime-ms",   "--passive",   "--bandwidth"};
// Options of the cluster's VM commands (tools/keelctl/cluster_commands.h).
const std::set<std::string> kClusterOnly = {"--host", "--storage-host", "--agent",   "--wait",
                                            "--to",   "--downtime-ms",  "--passive", "--bandwidth"};
const std::set<std::string> kFlags = {"--json", "--force"};

struct Line {
  std::vector<std::string> words;
  std::multimap<std::string, std::string> options;
  std::set<std::string> flags;

  std::optional<std::string> option(const std::string& name) const {
    auto it = options.find(name);
    if (it == options.end()) return std::nullopt;
    return it->second;
  }
  std::vector<std::string> all(const std::string& name) const {
    std::vector<std::string> out;
    for (auto [it, end] = options.equal_range(name); it != end; ++it) out.push_back(it->second);
    return out;
  }
};

Line parse(int argc, char** argv) {
  Line line;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      line.words.push_back(arg);
      continue;
    }
    std::optional<std::string> inline_value;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg.resize(eq);
    }
    // vm snapshot's --memory takes no value (vm create's --memory SIZE does).
    const bool memory_flag = arg == "--memory" && !inline_value &&
                             (i + 1 >= argc || std::string(argv[i + 1]).rfind("--", 0) == 0);
    if (kFlags.count(arg) || memory_flag) {
      line.flags.insert(arg);
    } else if (kValued.count(arg)) {
      if (!inline_value && i + 1 >= argc) throw UsageError{arg + " needs a value"};
      line.options.emplace(arg, inline_value ? *inline_value : argv[++i]);
    } else {
      throw UsageError{"unknown option " + arg};
    }
  }
  for (const auto& [name, value] : line.options) {
    if (name != "--ssh-key" && name != "--allow" && line.options.count(name) > 1)
      throw UsageError{name + " given more than once"};
  }
  return line;
}

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(what + " " + path + ": " + std::strerror(errno));
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

storage::Pool open_pool(const Line& line) {
  auto path = line.option("--pool");
  if (!path) {
    const char* env = std::getenv("KEEL_POOL");
    if (env == nullptr || *env == '\0') throw UsageError{"no pool: give --pool PATH"};
    path = env;
  }
  storage::Pool pool = storage::Pool::open(*path);
  // What a keelctl that died mid-operation left is cleaned up by the next.
  for (const std::string& done : storage::sweep_leftovers(pool))
    std::cerr << "keelctl: pool " << pool.path().string() << ": " << done << "\n";
  return pool;
}

void expect_words(const Line& line, size_t count, const std::string& usage) {
  if (line.words.size() != count) throw UsageError{"usage: keelctl " + usage};
}

std::string to_json(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

void print_image(const pool::v1::Image& image, const storage::ImageStore& images) {
  std::cout << "image " << image.name() << "\n";
  if (!image.disk().empty())
    std::cout << "  disk      " << human_bytes(image.disk_bytes()) << " (raw)\n";
  if (!image.kernel().empty())
    std::cout << "  kernel    yes" << (image.initrd().empty() ? "" : ", initrd") << "\n";
  if (!image.cmdline().empty()) std::cout << "  cmdline   " << image.cmdline() << "\n";
  std::cout << "  stored    " << human_bytes(image.allocated_bytes()) << "\n";
  std::cout << "  source    " << image.source() << "\n";
  std::cout << "  imported  " << image.imported_at() << "\n";
  auto users = images.users(image.name());
  std::string list;
  for (const auto& u : users) list += (list.empty() ? "" : ", ") + u;
  std::cout << "  used by   " << (list.empty() ? "no VM" : list) << "\n";
}

std::string vm_state(const std::string& name) {
  auto pid = storage::running_vmm(name);
  return pid ? "running (keel-vmm " + std::to_string(*pid) + ")" : "stopped";
}

void print_vm(const pool::v1::Vm& vm, const storage::VmStore& vms) {
  std::cout << "vm " << vm.name() << "\n"
            << "  state     " << vm_state(vm.name()) << "\n"
            << "  image     " << vm.image() << "\n"
            << "  cpus      " << vm.cpus() << "\n"
            << "  memory    " << human_bytes(vm.memory_bytes()) << "\n"
            << "  disk      "
            << (vm.disk_bytes() ? human_bytes(vm.disk_bytes()) : std::string("none")) << "\n"
            << "  hostname  " << vm.hostname() << "\n"
            << "  address   " << (vm.address().empty() ? "DHCP" : vm.address())
            << (vm.gateway().empty() ? "" : " via " + vm.gateway()) << "\n"
            << "  network   "
            << (vm.tap().empty() ? "none" : "tap " + vm.tap() + ", MAC " + vm.mac()) << "\n"
            << "  ssh keys  " << vm.ssh_keys_size() << "\n"
            << "  user-data " << (vm.user_data_given() ? "the operator's" : "Keel's") << "\n"
            << "  created   " << vm.created_at() << "\n"
            << "  socket    " << storage::vm_api_socket(vm.name()).string() << "\n";
  auto snaps = vms.snapshots(vm.name());
  std::cout << "  snapshots " << snaps.size() << "\n";
  for (const auto& s : snaps) std::cout << "    " << s.name << "  " << s.created_at << "\n";
}

void start_vm(storage::VmStore& vms, const std::string& name) {
  const auto vm = vms.get(name);
  // keel-vmm writes memory snapshots only below this (--snapshot-root).
  const fs::path memory_root = storage::vm_memory_root(vms, name);
  fs::create_directories(memory_root);
  ::chmod(memory_root.c_str(), 0700);
  std::vector<std::string> argv{cluster::vmm_program()};
  for (auto& a : storage::vmm_arguments(vms, vm)) argv.push_back(std::move(a));
  const pid_t vmm = cluster::launch_vmm({name, argv, vms.path(name) / "keel-vmm.log", {}});
  if (!vm.resume_from().empty()) vms.forget_resume_state(name);
  std::cout << (vm.resume_from().empty() ? "started " : "resumed ") << name
            << (vm.resume_from().empty() ? "" : " from snapshot " + vm.resume_from())
            << " (keel-vmm " << vmm << ", socket " << storage::vm_api_socket(name).string()
            << ", console " << (vms.path(name) / "console.log").string() << ")\n";
}

void stop_vm(const std::string& name, const Line& line) {
  auto pid = storage::running_vmm(name);
  if (!pid) throw InputError("VM " + name + " is not running");
  double timeout = 60;
  if (auto t = line.option("--timeout")) {
    try {
      size_t used = 0;
      timeout = std::stod(*t, &used);
      if (used != t->size() || !(timeout >= 0 && timeout <= 86400)) throw std::out_of_range(*t);
    } catch (const std::exception&) {
      throw UsageError{"invalid value for --timeout: '" + *t + "' (seconds, up to 86400)"};
    }
  }
  api::v1::Request request;
  if (line.flags.count("--force")) {
    request.mutable_kill();
  } else {
    request.mutable_shutdown()->set_timeout_ms(static_cast<uint32_t>(timeout * 1000));
  }
  ControlClient client(storage::vm_api_socket(name).string(), std::chrono::seconds(10));
  const auto response =
      client.call(request, std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000) + 10000));
  if (!response.ok()) throw InputError("VM " + name + ": " + response.error().message());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (::kill(*pid, 0) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // The record of a process goes only with the process.
  if (::kill(*pid, 0) == 0)
    throw std::runtime_error("keel-vmm " + std::to_string(*pid) + " of VM " + name +
                             " still runs 10 s after it was told to stop");
  fs::remove(storage::vm_pid_file(name));
  std::cout << "stopped " << name << "\n";
}

api::v1::Response call_vmm(const std::string& name, api::v1::Request request,
                           std::chrono::seconds wait) {
  ControlClient client(storage::vm_api_socket(name).string(), std::chrono::seconds(10));
  auto response = client.call(std::move(request), wait);
  if (!response.ok()) throw InputError("VM " + name + ": " + response.error().message());
  return response;
}

// Pause, keel-vmm writes memory and devices into the VM's subvolume, a
// Btrfs snapshot takes them with the disks at that instant, resume.
void snapshot_with_memory(storage::VmStore& vms, const std::string& name,
                          const std::string& snapshot) {
  vms.get(name);
  storage::check_pool_name("snapshot", snapshot);
  if (!storage::running_vmm(name))
    throw InputError("VM " + name + " is not running: --memory snapshots a running VM");
  const fs::path state = storage::vm_memory_root(vms, name) / snapshot;
  if (fs::exists(vms.path(name) / "snapshots" / snapshot))
    throw InputError("VM " + name + " has a snapshot named " + snapshot + " already");
  fs::remove_all(state);  // a leftover of a snapshot that failed half-way
  api::v1::Request pause;
  pause.mutable_pause();
  call_vmm(name, pause, std::chrono::seconds(60));
  struct Resume {
    const std::string& name;
    ~Resume() {
      try {
        api::v1::Request resume;
        resume.mutable_resume();
        call_vmm(name, resume, std::chrono::seconds(60));
      } catch (const std::exception& e) {
        std::cerr << "keelctl: VM " << name << " could not be resumed: " << e.what() << "\n";
      }
    }
  } resume{name};
  api::v1::Request write;
  write.mutable_snapshot()->set_dir(state.string());
  call_vmm(name, write, std::chrono::seconds(600));
  try {
    vms.snapshot(name, snapshot);
  } catch (...) {
    fs::remove_all(state);
    throw;
  }
  fs::remove_all(state);  // the snapshot has it; the running VM's subvolume need not
}

void require_stopped(const std::string& name, const std::string& what) {
  if (auto pid = storage::running_vmm(name)) {
    throw InputError("VM " + name + " is running (keel-vmm " + std::to_string(*pid) +
                     "): stop it before " + what);
  }
}

int run_image(const Line& line) {
  const std::string verb = line.words.size() > 1 ? line.words[1] : "";
  storage::ImageStore images(open_pool(line));
  const bool json = line.flags.count("--json") > 0;
  if (verb == "import") {
    expect_words(line, 3,
                 "image import NAME [--disk FILE] [--kernel K [--initrd I]] [--cmdline TEXT]");
    storage::ImageFiles files{
        line.option("--disk").value_or(""), line.option("--kernel").value_or(""),
        line.option("--initrd").value_or(""), line.option("--cmdline").value_or("")};
    const auto image = images.import(line.words[2], files);
    if (json) {
      std::cout << to_json(image) << "\n";
    } else {
      std::cout << "imported " << image.name() << " (" << human_bytes(image.allocated_bytes())
                << " stored)\n";
    }
  } else if (verb == "list") {
    expect_words(line, 2, "image list");
    std::vector<std::string> problems;
    for (const auto& image : images.list(&problems)) {
      if (json) {
        std::cout << to_json(image) << "\n";
      } else {
        std::cout << image.name() << "  "
                  << (image.disk().empty() ? "no disk" : human_bytes(image.disk_bytes()))
                  << (image.kernel().empty() ? "" : ", kernel") << "  " << image.imported_at()
                  << "\n";
      }
    }
    for (const auto& p : problems) std::cerr << "keelctl: " << p << "\n";
  } else if (verb == "show") {
    expect_words(line, 3, "image show NAME");
    const auto image = images.get(line.words[2]);
    if (json) {
      std::cout << to_json(image) << "\n";
    } else {
      print_image(image, images);
    }
  } else if (verb == "delete") {
    expect_words(line, 3, "image delete NAME");
    images.remove(line.words[2]);
    std::cout << "deleted image " << line.words[2] << "\n";
  } else {
    throw UsageError{"unknown image command '" + verb + "' (import, list, show, delete)"};
  }
  return 0;
}

storage::VmSpec vm_spec(const Line& line) {
  storage::VmSpec spec;
  spec.name = line.words[2];
  auto image = line.option("--image");
  if (!image) throw UsageError{"vm create needs --image IMAGE"};
  spec.image = *image;
  if (auto cpus = line.option("--cpus")) {
    try {
      size_t used = 0;
      const unsigned long n = std::stoul(*cpus, &used);
      if (used != cpus->size() || n > 255) throw std::out_of_range("cpus");
      spec.cpus = static_cast<uint32_t>(n);
    } catch (const std::exception&) {
      throw UsageError{"invalid value for --cpus: '" + *cpus + "'"};
    }
  }
  if (auto memory = line.option("--memory")) spec.memory_bytes = parse_size(*memory);
  if (auto size = line.option("--disk-size")) spec.disk_bytes = parse_size(*size);
  spec.hostname = line.option("--hostname").value_or("");
  spec.address = line.option("--ip").value_or("");
  spec.gateway = line.option("--gateway").value_or("");
  spec.tap = line.option("--tap").value_or("");
  for (const auto& file : line.all("--ssh-key")) {
    std::istringstream keys(read_file(file, "SSH key file"));
    for (std::string key; std::getline(keys, key);) {
      if (!key.empty() && key.back() == '\r') key.pop_back();
      if (!key.empty() && key[0] != '#') spec.ssh_keys.push_back(key);
    }
  }
  if (auto file = line.option("--user-data")) spec.user_data = read_file(*file, "user-data file");
  return spec;
}

double seconds_option(const Line& line, const std::string& name) {
  auto value = line.option(name);
  if (!value) return 0;
  try {
    size_t used = 0;
    const double s = std::stod(*value, &used);
    if (used != value->size() || !(s > 0 && s <= 86400)) throw std::out_of_range(*value);
    return s;
  } catch (const std::exception&) {
    throw UsageError{"invalid value for " + name + ": '" + *value + "' (seconds, up to 86400)"};
  }
}

bool pool_given(const Line& line) {
  const char* env = std::getenv("KEEL_POOL");
  return line.option("--pool") || (env != nullptr && *env != '\0');
}

// Without a pool, the VM commands work on the cluster's VMs through the
// agent.
int run_cluster_vm_line(const Line& line) {
  ClusterVmCommand c;
  c.verb = line.words.size() > 1 ? line.words[1] : "";
  if (c.verb == "ha") {
    // vm ha ACTION NAME
    c.ha_action = line.words.size() > 2 ? line.words[2] : "";
    static const std::set<std::string> kActions = {"enable", "disable", "status", "switchover"};
    if (!kActions.count(c.ha_action)) {
      throw UsageError{"vm ha needs enable, disable, status or switchover"};
    }
    expect_words(
        line, 4,
        "vm ha " + c.ha_action + " NAME" + (c.ha_action == "enable" ? " --passive HOST" : ""));
    c.name = line.words[3];
    c.passive = line.option("--passive").value_or("");
    if (c.ha_action == "enable" && c.passive.empty()) {
      throw UsageError{"vm ha enable needs --passive HOST"};
    }
    c.wait_s = seconds_option(line, "--wait");
    c.json = line.flags.count("--json") > 0;
    c.agent = line.option("--agent");
    return run_cluster_vm(c);
  }
  const bool named = c.verb != "list";
  const std::string usage = c.verb == "create"  ? "vm create NAME --image IMAGE [...]"
                            : c.verb == "start" ? "vm start NAME [--host HOST]"
                            : c.verb == "stop"  ? "vm stop NAME [--timeout SEC] [--force]"
                            : c.verb == "list"  ? "vm list"
                            : c.verb == "migrate"
                                ? "vm migrate NAME --to HOST [--downtime-ms MS] [--bandwidth MBPS]"
                                : "vm " + c.verb + " NAME";
  expect_words(line, named ? 3 : 2, usage);
  if (named) c.name = line.words[2];
  if (c.verb == "create") c.spec = vm_spec(line);
  c.storage_host = line.option("--storage-host").value_or("");
  c.host = line.option("--host").value_or("");
  c.timeout_s = seconds_option(line, "--timeout");
  c.wait_s = seconds_option(line, "--wait");
  c.force = line.flags.count("--force") > 0;
  c.json = line.flags.count("--json") > 0;
  c.agent = line.option("--agent");
  c.to = line.option("--to").value_or("");
  if (c.verb == "migrate" && c.to.empty()) throw UsageError{"vm migrate needs --to HOST"};
  if (auto ms = line.option("--downtime-ms")) {
    try {
      size_t used = 0;
      const unsigned long v = std::stoul(*ms, &used);
      if (used != ms->size() || v == 0 || v > 60000) throw std::out_of_range(*ms);
      c.downtime_ms = static_cast<uint32_t>(v);
    } catch (const std::exception&) {
      throw UsageError{"invalid value for --downtime-ms: '" + *ms + "' (1 to 60000)"};
    }
  }
  if (auto mbps = line.option("--bandwidth")) {
    try {
      size_t used = 0;
      const unsigned long long v = std::stoull(*mbps, &used);
      if (used != mbps->size() || v == 0 || v > 1000000) throw std::out_of_range(*mbps);
      c.bandwidth_mbps = v;
    } catch (const std::exception&) {
      throw UsageError{"invalid value for --bandwidth: '" + *mbps + "' (MB/s, 1 to 1000000)"};
    }
  }
  return run_cluster_vm(c);
}

int run_vm(const Line& line) {
  const std::string verb = line.words.size() > 1 ? line.words[1] : "";
  static const std::set<std::string> kClusterVerbs = {"create", "start",  "stop",    "list",
                                                      "show",   "delete", "migrate", "ha"};
  if (!pool_given(line) && kClusterVerbs.count(verb)) return run_cluster_vm_line(line);
  for (const auto& option : kClusterOnly) {
    if (line.option(option)) {
      throw UsageError{option + " is for the cluster's VMs (no --pool, no $KEEL_POOL)"};
    }
  }
  storage::VmStore vms(open_pool(line));
  const bool json = line.flags.count("--json") > 0;
  auto name = [&line] { return line.words[2]; };
  if (verb == "create") {
    expect_words(line, 3, "vm create NAME --image IMAGE [...]");
    const auto vm = vms.create(vm_spec(line));
    if (json) {
      std::cout << to_json(vm) << "\n";
    } else {
      std::cout << "created " << vm.name() << " from " << vm.image() << "\n";
    }
  } else if (verb == "list") {
    expect_words(line, 2, "vm list");
    std::vector<std::string> problems;
    for (const auto& vm : vms.list(&problems)) {
      if (json) {
        std::cout << to_json(vm) << "\n";
      } else {
        std::cout << vm.name() << "  " << vm_state(vm.name()) << "  " << vm.image() << "  "
                  << vm.cpus() << " vCPU, " << human_bytes(vm.memory_bytes()) << "\n";
      }
    }
    for (const auto& p : problems) std::cerr << "keelctl: " << p << "\n";
  } else if (verb == "show") {
    expect_words(line, 3, "vm show NAME");
    const auto vm = vms.get(name());
    if (json) {
      std::cout << to_json(vm) << "\n";
    } else {
      print_vm(vm, vms);
    }
  } else if (verb == "delete") {
    expect_words(line, 3, "vm delete NAME");
    require_stopped(name(), "deleting it");
    vms.remove(name());
    std::cout << "deleted " << name() << "\n";
  } else if (verb == "start") {
    expect_words(line, 3, "vm start NAME");
    start_vm(vms, name());
  } else if (verb == "stop") {
    expect_words(line, 3, "vm stop NAME [--timeout SEC] [--force]");
    stop_vm(name(), line);
  } else if (verb == "snapshot") {
    expect_words(line, 4, "vm snapshot NAME SNAP [--memory]");
    if (line.flags.count("--memory")) {
      snapshot_with_memory(vms, name(), line.words[3]);
    } else {
      vms.snapshot(name(), line.words[3]);
    }
    std::cout << "snapshot " << line.words[3] << " of " << name()
              << (line.flags.count("--memory") ? " (with memory)" : "") << "\n";
  } else if (verb == "snapshots") {
    expect_words(line, 3, "vm snapshots NAME");
    for (const auto& s : vms.snapshots(name())) std::cout << s.name << "  " << s.created_at << "\n";
  } else if (verb == "rollback") {
    expect_words(line, 4, "vm rollback NAME SNAP");
    require_stopped(name(), "rolling it back");
    vms.rollback(name(), line.words[3]);
    std::cout << name() << " rolled back to " << line.words[3] << "\n";
  } else if (verb == "delete-snapshot") {
    expect_words(line, 4, "vm delete-snapshot NAME SNAP");
    vms.delete_snapshot(name(), line.words[3]);
    std::cout << "deleted snapshot " << line.words[3] << " of " << name() << "\n";
  } else if (verb == "clone") {
    expect_words(line, 4, "vm clone NAME NEW [--from-snapshot SNAP] [--hostname H]");
    const auto vm = vms.clone(name(), line.words[3], line.option("--from-snapshot").value_or(""),
                              line.option("--hostname").value_or(""));
    if (json) {
      std::cout << to_json(vm) << "\n";
    } else {
      std::cout << "cloned " << name() << " as " << vm.name() << "\n";
    }
  } else {
    throw UsageError{"unknown vm command '" + verb + "'"};
  }
  return 0;
}

int run_nbd(const Line& line) {
  if (line.words.size() != 2 || line.words[1] != "serve")
    throw UsageError{"usage: keelctl nbd serve --listen ADDR:PORT --allow VM=CLIENT..."};
  auto listen = line.option("--listen");
  if (!listen) throw UsageError{"nbd serve needs --listen ADDR:PORT"};
  const TcpEndpoint endpoint = parse_host_port(*listen, "--listen");
  std::map<std::string, std::set<std::string>> allow;
  for (const auto& rule : line.all("--allow")) storage::PoolNbdCatalog::add_rule(rule, allow);
  if (allow.empty()) {
    std::cerr << "keelctl: nbd serve: no --allow given: no client may open any export\n";
  }
  // SIGINT and SIGTERM end the server from a thread of their own.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto catalog =
      std::make_shared<storage::PoolNbdCatalog>(storage::VmStore(open_pool(line)), allow);
  storage::NbdServer server(catalog, endpoint);
  std::cout << "serving NBD on " << endpoint.text.substr(0, endpoint.text.rfind(':')) << ":"
            << server.port() << std::endl;
  std::atomic<bool> signalled{false};
  std::thread waiter([&server, &signalled, signals] {
    int signo = 0;
    sigwait(&signals, &signo);
    signalled = true;
    server.stop();
  });
  // However run() ends, the waiter is woken (with the signal it waits
  // for, which stays blocked) and joined.
  struct JoinWaiter {
    std::thread& waiter;
    std::atomic<bool>& signalled;
    ~JoinWaiter() {
      if (!signalled) pthread_kill(waiter.native_handle(), SIGTERM);
      waiter.join();
    }
  } join_waiter{waiter, signalled};
  server.run();
  std::cout << "stopped (" << server.stats().connections << " connections)" << std::endl;
  return 0;
}

int dispatch(const Line& line) {
  const std::string& group = line.words.front();
  if (group == "pool") {
    if (line.words.size() != 3 || line.words[1] != "init")
      throw UsageError{"usage: keelctl pool init PATH"};
    const auto pool = storage::Pool::init(line.words[2]);
    std::cout << "pool " << pool.path().string() << " ready\n";
    return 0;
  }
  if (group == "image") return run_image(line);
  if (group == "nbd") return run_nbd(line);
  return run_vm(line);
}

}  // namespace

bool is_pool_command(int argc, char** argv) {
  static const std::set<std::string> kSocketValued = {
      "--socket", "--wait", "--timeout", "--downtime-ms", "--bandwidth", "--connections"};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("-", 0) == 0) {
      if (arg.find('=') == std::string::npos && (kValued.count(arg) || kSocketValued.count(arg)))
        ++i;  // its value
      continue;
    }
    return arg == "pool" || arg == "image" || arg == "vm" || arg == "nbd";
  }
  return false;
}

int run_pool_command(int argc, char** argv) {
  try {
    return dispatch(parse(argc, argv));
  } catch (const UsageError& e) {
    std::cerr << "keelctl: " << e.message << "\n" << kPoolUsage;
    return 2;
  } catch (const InputError& e) {
    std::cerr << "keelctl: " << e.what() << "\n";
    return 1;
  } catch (const ControlClientError& e) {
    std::cerr << "keelctl: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "keelctl: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace keel
