#include "storage/vm_store.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <fstream>
#include <iterator>

#include "common/error.h"
#include "common/size_parse.h"
#include "common/unique_fd.h"
#include "storage/btrfs_subvolume.h"
#include "storage/cloud_init_seed.h"
#include "storage/image_lock.h"
#include "storage/image_store.h"
#include "storage/json_record.h"
#include "storage/undo_list.h"

namespace keel::storage {

namespace fs = std::filesystem;

namespace {

constexpr const char* kRecord = "vm.json";
constexpr const char* kSeed = "seed.img";
constexpr const char* kUserData = "user-data";
constexpr const char* kDisk = "disk.raw";
constexpr uint64_t kMinMemory = uint64_t{16} << 20;

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (::getrandom(raw.data(), raw.size(), 0) != static_cast<ssize_t>(raw.size()))
    throw_errno("getrandom");
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

// Locally administered, unicast: 02:xx:xx:xx:xx:xx.
std::string new_mac() {
  const std::string hex = random_hex(5);
  std::string mac = "02";
  for (size_t i = 0; i < hex.size(); i += 2) mac += ":" + hex.substr(i, 2);
  return mac;
}

std::string new_instance_id(const std::string& name) {
  return "keel-" + name + "-" + random_hex(4);
}

bool exists_at(const fs::path& path) {
  std::error_code ec;
  return fs::symlink_status(path, ec).type() != fs::file_type::not_found;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot be read");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_seed(const fs::path& dir, const pool::v1::Vm& vm,
                const std::optional<std::string>& user_data) {
  const auto image = make_fat_image("cidata", cloud_init_files(vm, user_data));
  write_file_whole(dir / kSeed,
                   std::string_view(reinterpret_cast<const char*>(image.data()), image.size()));
}

void check_tap(const std::string& tap) {
  // keel-vmm's --net takes key=value pairs split at commas.
  const bool ok = tap.size() < 16 && tap.find_first_of("/ ,=:") == std::string::npos &&
                  tap != "." && tap != "..";
  if (tap.empty() || !ok) throw InputError("tap '" + tap + "' is not a network interface name");
}

std::string time_text(int64_t seconds) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void rename_no_replace(const fs::path& from, const fs::path& to, const std::string& taken) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) != 0) {
    if (errno == EEXIST) throw InputError(taken);
    throw_errno("renaming " + from.string() + " to " + to.string());
  }
}

// The hidden directory a new VM is built in; removed with its subvolume
// unless kept.
fs::path start_building(const Pool& pool, const std::string& name, UndoList& undo) {
  const fs::path building = pool.vms() / (".create-" + name + "-" + std::to_string(::getpid()));
  if (::mkdir(building.c_str(), 0755) != 0) throw_errno("creating " + building.string());
  undo.add([building] { fs::remove_all(building); });
  return building;
}

void finish_building(const fs::path& building, const fs::path& current, const pool::v1::Vm& vm,
                     const std::optional<std::string>& user_data, const fs::path& final_path,
                     const Pool& pool) {
  write_seed(current, vm, user_data);
  write_json_record(current / kRecord, vm);
  if (::mkdir((building / "snapshots").c_str(), 0755) != 0)
    throw_errno("creating " + (building / "snapshots").string());
  rename_no_replace(building, final_path,
                    "pool " + pool.path().string() + " has a VM named " + vm.name() + " already");
  sync_directory(pool.vms());
}

bool is_mac(const std::string& mac) {
  if (mac.size() != 17) return false;
  for (size_t i = 0; i < mac.size(); ++i) {
    const char c = mac[i];
    const bool ok = i % 3 == 2 ? c == ':' : std::isxdigit(static_cast<unsigned char>(c)) != 0;
    if (!ok) return false;
  }
  return true;
}

// A record read back from disk (the VM's, or a snapshot's for a clone) is
// untrusted: everything that reaches keel-vmm's command line or the seed
// disk is checked as when it was created.
void validate_vm_record(const pool::v1::Vm& vm, const fs::path& where) {
  try {
    check_pool_name("VM", vm.name());
    check_pool_name("image", vm.image());
    if (vm.cpus() == 0 || vm.cpus() > 255) throw InputError("cpus must be 1 to 255");
    if (vm.memory_bytes() < kMinMemory) throw InputError("memory must be at least 16M");
    check_hostname(vm.hostname());
    if (!vm.address().empty()) check_address_with_prefix(vm.address());
    if (!vm.gateway().empty()) check_gateway(vm.gateway(), vm.address());
    for (const auto& key : vm.ssh_keys()) check_ssh_key(key);
    if (!vm.tap().empty()) check_tap(vm.tap());
    if (!is_mac(vm.mac())) throw InputError("MAC '" + vm.mac() + "' is not xx:xx:xx:xx:xx:xx");
    const std::string& id = vm.instance_id();
    const bool id_ok =
        !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
        });
    if (!id_ok) throw InputError("instance ID '" + id + "' is not one Keel makes");
    if (!vm.resume_from().empty()) check_pool_name("snapshot", vm.resume_from());
    for (char c : vm.cmdline()) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
        throw InputError("the kernel command line holds a control character");
    }
  } catch (const InputError& e) {
    throw InputError(where.string() + ": " + e.what());
  }
}

}  // namespace

pool::v1::Vm VmStore::create(const VmSpec& spec) {
  check_pool_name("VM", spec.name);
  const fs::path final_path = path(spec.name);
  if (exists_at(final_path))
    throw InputError("pool " + pool_.path().string() + " has a VM named " + spec.name + " already");
  const pool::v1::Image image = ImageStore(pool_).get(spec.image);
  if (image.kernel().empty()) {
    throw InputError("image " + spec.image +
                     " has no kernel: keel-vmm boots a kernel directly (import the image with "
                     "--kernel)");
  }
  if (spec.cpus == 0 || spec.cpus > 255) throw InputError("--cpus must be 1 to 255");
  if (spec.memory_bytes < kMinMemory) throw InputError("--memory must be at least 16M");
  uint64_t disk_bytes = image.disk().empty() ? spec.disk_bytes : image.disk_bytes();
  if (!image.disk().empty() && spec.disk_bytes != 0) {
    if (spec.disk_bytes < image.disk_bytes()) {
      throw InputError("--disk-size " + human_bytes(spec.disk_bytes) + " is smaller than image " +
                       spec.image + "'s disk (" + human_bytes(image.disk_bytes()) + ")");
    }
    disk_bytes = spec.disk_bytes;
  }
  const std::string hostname = spec.hostname.empty() ? spec.name : spec.hostname;
  check_hostname(hostname);
  if (!spec.address.empty()) check_address_with_prefix(spec.address);
  if (!spec.gateway.empty()) check_gateway(spec.gateway, spec.address);
  for (const auto& key : spec.ssh_keys) check_ssh_key(key);
  if (!spec.tap.empty()) check_tap(spec.tap);
  if (spec.user_data && spec.user_data->size() > (uint64_t{16} << 20))
    throw InputError("user-data is larger than 16 MiB");
  // The snapshot shares every extent; what is new is the seed disk and the
  // records.
  pool_.require_space(uint64_t{4} << 20, "creating VM " + spec.name);

  UndoList undo;
  const fs::path building = start_building(pool_, spec.name, undo);
  const fs::path current = building / "current";
  snapshot_subvolume(ImageStore(pool_).path(spec.image).string(), current.string(), false);
  undo.add([current] { delete_subvolume(current.string()); });
  fs::remove(current / "image.json");  // the VM's record is vm.json
  if (disk_bytes != 0) {
    // Growing is sparse: the guest's file system grows into it (cloud-init's
    // resize on first boot), the volume gives blocks as it writes.
    const fs::path disk = current / kDisk;
    if (::truncate(disk.c_str(), static_cast<off_t>(disk_bytes)) != 0) {
      if (errno != ENOENT) throw_errno("sizing " + disk.string());
      UniqueFd fd(::open(disk.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
      if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(disk_bytes)) != 0)
        throw_errno("creating " + disk.string());
    }
  }
  if (spec.user_data) write_file_whole(current / kUserData, *spec.user_data);

  pool::v1::Vm vm;
  vm.set_name(spec.name);
  vm.set_image(spec.image);
  vm.set_cpus(spec.cpus);
  vm.set_memory_bytes(spec.memory_bytes);
  vm.set_disk_bytes(disk_bytes);
  vm.set_cmdline(image.cmdline());
  vm.set_hostname(hostname);
  vm.set_address(spec.address);
  vm.set_gateway(spec.gateway);
  for (const auto& key : spec.ssh_keys) vm.add_ssh_keys(key);
  vm.set_user_data_given(spec.user_data.has_value());
  vm.set_tap(spec.tap);
  vm.set_mac(new_mac());
  vm.set_instance_id(new_instance_id(spec.name));
  vm.set_created_at(utc_now());
  finish_building(building, current, vm, spec.user_data, final_path, pool_);
  undo.keep();
  return vm;
}

pool::v1::Vm VmStore::receive_copy(const pool::v1::Vm& vm, const fs::path& files) {
  validate_vm_record(vm, files / kRecord);
  const fs::path final_path = path(vm.name());
  if (exists_at(final_path)) {
    throw InputError("pool " + pool_.path().string() + " has a VM named " + vm.name() + " already");
  }
  // The replica fills the whole disk in the worst case.
  pool_.require_space(vm.disk_bytes() + (uint64_t{4} << 20), "a copy of VM " + vm.name());
  UndoList undo;
  const fs::path building = start_building(pool_, vm.name(), undo);
  const fs::path current = building / "current";
  create_subvolume(current.string());
  undo.add([current] { delete_subvolume(current.string()); });
  set_nodatacow_for_new_files(current.string());
  for (const char* file : {"kernel", "initrd", kSeed}) {
    if (!exists_at(files / file)) {
      if (std::string(file) == "initrd") continue;
      throw InputError("VM " + vm.name() + "'s copy has no " + file);
    }
    fs::copy_file(files / file, current / file);
  }
  if (vm.disk_bytes() != 0) {
    const fs::path disk = current / kDisk;
    UniqueFd fd(::open(disk.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(vm.disk_bytes())) != 0)
      throw_errno("creating " + disk.string());
  }
  write_json_record(current / kRecord, vm);
  if (::mkdir((building / "snapshots").c_str(), 0755) != 0)
    throw_errno("creating " + (building / "snapshots").string());
  rename_no_replace(building, final_path,
                    "pool " + pool_.path().string() + " has a VM named " + vm.name() + " already");
  sync_directory(pool_.vms());
  undo.keep();
  return vm;
}

std::vector<pool::v1::Vm> VmStore::list(std::vector<std::string>* problems) const {
  std::vector<pool::v1::Vm> vms;
  for (const auto& name : pool_entry_names(pool_.vms())) {
    try {
      vms.push_back(get(name));
    } catch (const InputError& error) {
      if (problems) problems->push_back(error.what());
    }
  }
  return vms;
}

pool::v1::Vm VmStore::get(const std::string& name) const {
  check_pool_name("VM", name);
  if (!fs::is_directory(fs::symlink_status(path(name))))
    throw InputError("pool " + pool_.path().string() + " has no VM named " + name);
  pool::v1::Vm vm;
  read_json_record(current(name) / kRecord, &vm);
  if (vm.name() != name) {
    throw InputError((current(name) / kRecord).string() + " names VM '" + vm.name() + "', not " +
                     name);
  }
  validate_vm_record(vm, current(name) / kRecord);
  return vm;
}

void VmStore::remove(const std::string& name) {
  get(name);
  // Renamed away first: a VM half deleted is never listed. Its disk locked
  // until then: a keel-vmm or NBD client that has it is not pulled out
  // from under, and none can open it by its name afterwards.
  const fs::path doomed = pool_.vms() / (".delete-" + name + "-" + std::to_string(::getpid()));
  {
    ImageLock lock((current(name) / "disk.raw").string(), "VM " + name + " cannot be deleted");
    if (::rename(path(name).c_str(), doomed.c_str()) != 0) throw_errno("renaming VM " + name);
  }
  for (const auto& e : fs::directory_iterator(doomed / "snapshots")) {
    if (is_subvolume(e.path())) delete_subvolume(e.path());
  }
  if (is_subvolume(doomed / "current")) delete_subvolume((doomed / "current").string());
  fs::remove_all(doomed);
}

void VmStore::snapshot(const std::string& name, const std::string& snapshot) {
  get(name);
  check_pool_name("snapshot", snapshot);
  const fs::path target = path(name) / "snapshots" / snapshot;
  if (exists_at(target))
    throw InputError("VM " + name + " has a snapshot named " + snapshot + " already");
  pool_.require_space(uint64_t{1} << 20, "a snapshot of VM " + name);
  snapshot_subvolume(current(name).string(), target.string(), true);
}

std::vector<VmSnapshot> VmStore::snapshots(const std::string& name) const {
  get(name);
  std::vector<VmSnapshot> out;
  for (const auto& snap : pool_entry_names(path(name) / "snapshots")) {
    const fs::path at = path(name) / "snapshots" / snap;
    if (is_subvolume(at)) out.push_back({snap, time_text(subvolume_created(at))});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.created_at != b.created_at ? a.created_at < b.created_at : a.name < b.name;
  });
  return out;
}

void VmStore::rollback(const std::string& name, const std::string& snapshot) {
  get(name);
  check_pool_name("snapshot", snapshot);
  const fs::path source = path(name) / "snapshots" / snapshot;
  if (!is_subvolume(source)) throw InputError("VM " + name + " has no snapshot named " + snapshot);
  const std::string pid = std::to_string(::getpid());
  const fs::path fresh = path(name) / (".rollback-" + pid);
  const fs::path old = path(name) / (".old-" + pid);
  // The disk in use (a keel-vmm, an NBD client) is not swapped under it.
  std::optional<ImageLock> lock;
  lock.emplace((current(name) / "disk.raw").string(), "VM " + name + " cannot be rolled back");
  UndoList undo;
  snapshot_subvolume(source.string(), fresh.string(), false);
  undo.add([fresh] { delete_subvolume(fresh.string()); });
  // Two renames: the VM has its old state or the snapshot's, never none
  // for longer than between them.
  if (::rename(current(name).c_str(), old.c_str()) != 0)
    throw_errno("renaming " + current(name).string());
  const fs::path now = current(name);
  undo.add([old, now] { fs::rename(old, now); });
  if (::rename(fresh.c_str(), now.c_str()) != 0) throw_errno("renaming " + fresh.string());
  undo.keep();
  lock.reset();
  delete_subvolume(old.string());
  if (fs::is_directory(now / ".memory" / snapshot)) {
    pool::v1::Vm vm = get(name);
    vm.set_resume_from(snapshot);
    write_json_record(now / kRecord, vm);
  }
}

void VmStore::forget_resume_state(const std::string& name) {
  pool::v1::Vm vm = get(name);
  if (vm.resume_from().empty()) return;
  check_pool_name("snapshot", vm.resume_from());
  fs::remove_all(current(name) / ".memory" / vm.resume_from());
  vm.clear_resume_from();
  write_json_record(current(name) / kRecord, vm);
}

void VmStore::delete_snapshot(const std::string& name, const std::string& snapshot) {
  get(name);
  check_pool_name("snapshot", snapshot);
  const fs::path target = path(name) / "snapshots" / snapshot;
  if (!is_subvolume(target)) throw InputError("VM " + name + " has no snapshot named " + snapshot);
  delete_subvolume(target.string());
}

pool::v1::Vm VmStore::clone(const std::string& source, const std::string& name,
                            const std::string& from_snapshot, const std::string& hostname) {
  get(source);
  check_pool_name("VM", name);
  const fs::path final_path = path(name);
  if (exists_at(final_path))
    throw InputError("pool " + pool_.path().string() + " has a VM named " + name + " already");
  fs::path from = current(source);
  if (!from_snapshot.empty()) {
    check_pool_name("snapshot", from_snapshot);
    from = path(source) / "snapshots" / from_snapshot;
    if (!is_subvolume(from))
      throw InputError("VM " + source + " has no snapshot named " + from_snapshot);
  }
  pool::v1::Vm vm;
  read_json_record(from / kRecord, &vm);
  validate_vm_record(vm, from / kRecord);
  const std::string host = hostname.empty() ? name : hostname;
  check_hostname(host);
  pool_.require_space(uint64_t{4} << 20, "cloning VM " + source);

  UndoList undo;
  const fs::path building = start_building(pool_, name, undo);
  const fs::path current = building / "current";
  snapshot_subvolume(from.string(), current.string(), false);
  undo.add([current] { delete_subvolume(current.string()); });
  std::optional<std::string> user_data;
  if (vm.user_data_given()) user_data = read_text(current / kUserData);
  // A clone boots: a source's memory states stay with the source.
  fs::remove_all(current / ".memory");
  vm.clear_resume_from();
  // A new machine to the guest: cloud-init runs its once-per-instance steps
  // (host keys, hostname) again, and the network sees another MAC.
  vm.set_name(name);
  vm.set_hostname(host);
  vm.set_mac(new_mac());
  vm.set_instance_id(new_instance_id(name));
  vm.set_created_at(utc_now());
  finish_building(building, current, vm, user_data, final_path, pool_);
  undo.keep();
  return vm;
}

}  // namespace keel::storage
