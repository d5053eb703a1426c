#include "storage/image_store.h"

#include <fcntl.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "common/child_process.h"
#include "common/error.h"
#include "common/size_parse.h"
#include "common/unique_fd.h"
#include "storage/btrfs_subvolume.h"
#include "storage/json_record.h"
#include "storage/undo_list.h"
#include "storage/vm_store.h"

namespace keel::storage {

namespace fs = std::filesystem;

namespace {

constexpr const char* kRecord = "image.json";
constexpr const char* kDisk = "disk.raw";
constexpr auto kQemuImgTimeout = std::chrono::hours(2);

uint64_t allocated(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) throw_errno("stat of " + path.string());
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

void require_regular_file(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw InputError(what + " " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw InputError(what + " " + path + " is not a regular file");
  if (::access(path.c_str(), R_OK) != 0) throw InputError(what + " " + path + " is not readable");
}

// What qemu-img says of a disk image: its format (probed: the operator's
// file may be either), sizes, and whether it leans on another file.
struct DiskInfo {
  std::string format;
  uint64_t virtual_bytes = 0;
  uint64_t allocated_bytes = 0;
};

DiskInfo inspect_disk(const std::string& disk) {
  auto r = run_command({"qemu-img", "info", "--output=json", disk}, std::chrono::seconds(60));
  if (r.exit_code == 127)
    throw std::runtime_error("qemu-img is not installed (Debian: qemu-utils)");
  if (r.exit_code != 0) {
    throw InputError("disk " + disk +
                     " cannot be read as a disk image: " + r.err.substr(0, r.err.find('\n')));
  }
  google::protobuf::Struct info;
  if (!google::protobuf::util::JsonStringToMessage(r.out, &info).ok())
    throw std::runtime_error("qemu-img info gave output that is not JSON for " + disk);
  const auto& f = info.fields();
  auto text = [&f](const char* key) {
    auto it = f.find(key);
    return it == f.end() ? std::string() : it->second.string_value();
  };
  auto number = [&f](const char* key) {
    auto it = f.find(key);
    return it == f.end() ? 0.0 : it->second.number_value();
  };
  DiskInfo out;
  out.format = text("format");
  if (out.format != "raw" && out.format != "qcow2") {
    throw InputError("disk " + disk + " is in " + (out.format.empty() ? "an unknown" : out.format) +
                     " format; Keel imports raw and qcow2 disks");
  }
  // A backing file would pull a host file of the image's choosing into
  // the import; an encrypted one needs a key Keel does not have.
  if (!text("backing-filename").empty()) {
    throw InputError("disk " + disk + " is a qcow2 overlay on " + text("backing-filename") +
                     "; flatten it first (qemu-img convert -O qcow2)");
  }
  // qcow2's external data file names a host file or device just as well.
  if (f.count("format-specific")) {
    const auto& specific = f.at("format-specific").struct_value().fields();
    if (specific.count("data")) {
      const auto& data = specific.at("data").struct_value().fields();
      if (data.count("data-file"))
        throw InputError("disk " + disk + " keeps its data in an external file (" +
                         data.at("data-file").string_value() +
                         "); convert it to a plain qcow2 first");
    }
  }
  if (f.count("encrypted") && f.at("encrypted").bool_value())
    throw InputError("disk " + disk + " is encrypted; Keel imports plain disks");
  out.virtual_bytes = static_cast<uint64_t>(number("virtual-size"));
  out.allocated_bytes = static_cast<uint64_t>(number("actual-size"));
  if (out.virtual_bytes == 0) throw InputError("disk " + disk + " is empty");
  // qemu-img rounds a raw file's size up to a sector: the file's own size
  // is what tells.
  if (out.format == "raw") out.virtual_bytes = static_cast<uint64_t>(fs::file_size(disk));
  if (out.virtual_bytes % 512 != 0) {
    throw InputError("disk " + disk + " is " + std::to_string(out.virtual_bytes) +
                     " bytes, not whole 512-byte sectors: not a disk image");
  }
  return out;
}

void convert_disk(const std::string& source, const DiskInfo& info, const fs::path& target,
                  const Pool& pool) {
  auto r = run_command(
      {"qemu-img", "convert", "-q", "-f", info.format, "-O", "raw", source, target.string()},
      kQemuImgTimeout);
  if (r.exit_code != 0) {
    const std::string why = r.timed_out ? "it took longer than 2 hours" : r.err;
    if (why.find("No space left") != std::string::npos) {
      throw InputError("the volume of pool " + pool.path().string() + " is full: converting " +
                       source + " did not fit (" + human_bytes(pool.available_bytes()) +
                       " free now)");
    }
    throw std::runtime_error("qemu-img convert of " + source + " failed: " + why);
  }
  UniqueFd fd(::open(target.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid() || ::fsync(fd.get()) != 0) throw_errno("fsync of " + target.string());
}

void copy_into(const std::string& source, const fs::path& target, const Pool& pool) {
  std::error_code ec;
  fs::copy_file(source, target, ec);
  if (ec == std::errc::no_space_on_device) {
    throw InputError("the volume of pool " + pool.path().string() + " is full: copying " + source +
                     " did not fit");
  }
  if (ec) throw std::system_error(ec, "copying " + source + " to " + target.string());
  UniqueFd fd(::open(target.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid() || ::fsync(fd.get()) != 0) throw_errno("fsync of " + target.string());
}

uint64_t file_bytes(const std::string& path) {
  return path.empty() ? 0 : static_cast<uint64_t>(fs::file_size(path));
}

}  // namespace

pool::v1::Image ImageStore::import(const std::string& name, const ImageFiles& files) {
  check_pool_name("image", name);
  const fs::path final_path = path(name);
  if (fs::exists(fs::symlink_status(final_path)))
    throw InputError("pool " + pool_.path().string() + " has an image named " + name + " already");
  if (files.disk.empty() && files.kernel.empty())
    throw InputError("image " + name + ": give a disk, a kernel or both");
  if (!files.initrd.empty() && files.kernel.empty())
    throw InputError("image " + name + ": an initrd needs a kernel");
  if (!files.disk.empty()) require_regular_file(files.disk, "disk");
  if (!files.kernel.empty()) require_regular_file(files.kernel, "kernel");
  if (!files.initrd.empty()) require_regular_file(files.initrd, "initrd");

  DiskInfo disk;
  if (!files.disk.empty()) disk = inspect_disk(files.disk);
  pool_.require_space(disk.allocated_bytes + file_bytes(files.kernel) + file_bytes(files.initrd),
                      "importing image " + name);

  // Built under a hidden name, made read-only, then renamed into place:
  // the image appears whole or not at all.
  const fs::path building = pool_.images() / (".import-" + name + "-" + std::to_string(::getpid()));
  UndoList undo;
  create_subvolume(building.string());
  undo.add([building] { delete_subvolume(building.string()); });
  // VM disks are nodatacow: random writes in place, 2-4x the IOPS of
  // copy-on-write here (tests/bench/pool_cow_bench.sh, README). A VM's
  // snapshot of the image keeps the flag on its files and directory.
  set_nodatacow_for_new_files(building.string());

  pool::v1::Image image;
  image.set_name(name);
  image.set_cmdline(files.cmdline);
  std::string source;
  if (!files.disk.empty()) {
    convert_disk(files.disk, disk, building / kDisk, pool_);
    image.set_disk(kDisk);
    image.set_disk_bytes(disk.virtual_bytes);
    source = "disk " + fs::absolute(files.disk).string() + " (" + disk.format + ")";
  }
  if (!files.kernel.empty()) {
    copy_into(files.kernel, building / "kernel", pool_);
    image.set_kernel("kernel");
    source +=
        std::string(source.empty() ? "" : ", ") + "kernel " + fs::absolute(files.kernel).string();
  }
  if (!files.initrd.empty()) {
    copy_into(files.initrd, building / "initrd", pool_);
    image.set_initrd("initrd");
    source += ", initrd " + fs::absolute(files.initrd).string();
  }
  image.set_source(source);
  image.set_imported_at(utc_now());
  uint64_t used = 0;
  for (const auto& e : fs::directory_iterator(building)) used += allocated(e.path());
  image.set_allocated_bytes(used);
  write_json_record(building / kRecord, image);
  set_subvolume_read_only(building.string(), true);
  if (::renameat2(AT_FDCWD, building.c_str(), AT_FDCWD, final_path.c_str(), RENAME_NOREPLACE) !=
      0) {
    if (errno == EEXIST)
      throw InputError("pool " + pool_.path().string() + " has an image named " + name +
                       " already");
    throw_errno("renaming " + building.string() + " to " + final_path.string());
  }
  undo.keep();
  sync_directory(pool_.images());
  return image;
}

std::vector<pool::v1::Image> ImageStore::list(std::vector<std::string>* problems) const {
  std::vector<pool::v1::Image> images;
  for (const auto& name : pool_entry_names(pool_.images())) {
    try {
      images.push_back(get(name));
    } catch (const InputError& error) {
      if (problems) problems->push_back(error.what());
    }
  }
  return images;
}

pool::v1::Image ImageStore::get(const std::string& name) const {
  check_pool_name("image", name);
  const fs::path dir = path(name);
  if (!fs::is_directory(fs::symlink_status(dir)))
    throw InputError("pool " + pool_.path().string() + " has no image named " + name);
  pool::v1::Image image;
  read_json_record(dir / kRecord, &image);
  if (image.name() != name) {
    throw InputError(dir.string() + "/" + kRecord + " names image '" + image.name() + "', not " +
                     name);
  }
  // The record names files inside the image; nothing else.
  for (const std::string* file : {&image.disk(), &image.kernel(), &image.initrd()}) {
    if (!file->empty() && (file->find('/') != std::string::npos || *file == "." || *file == ".."))
      throw InputError(dir.string() + "/" + kRecord + " names a file outside the image");
  }
  return image;
}

std::vector<std::string> ImageStore::users(const std::string& name) const {
  std::vector<std::string> vms;
  const VmStore store(pool_);
  for (const auto& vm_name : pool_entry_names(pool_.vms())) {
    try {
      if (store.get(vm_name).image() == name) vms.push_back(vm_name);
    } catch (const InputError&) {
      // A VM whose record cannot be read might use the image: say so.
      vms.push_back(vm_name + " (record unreadable)");
    }
  }
  return vms;
}

void ImageStore::remove(const std::string& name) {
  get(name);
  auto vms = users(name);
  if (!vms.empty()) {
    std::string list;
    for (const auto& v : vms) list += (list.empty() ? "" : ", ") + v;
    throw InputError(
        "image " + name + " is kept: VM" + (vms.size() > 1 ? "s " : " ") + list +
        (vms.size() > 1 ? " use it (delete them first)" : " uses it (delete it first)"));
  }
  // Renamed away first, so that a half-deleted image is never listed.
  const fs::path doomed = pool_.images() / (".delete-" + name + "-" + std::to_string(::getpid()));
  if (::rename(path(name).c_str(), doomed.c_str()) != 0) throw_errno("renaming image " + name);
  delete_subvolume(doomed.string());
}

}  // namespace keel::storage
