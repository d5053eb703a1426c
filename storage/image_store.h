// A pool's system images: read-only subvolumes images/NAME holding the disk
// (raw, converted from raw or qcow2 by qemu-img), the kernel, the initrd and
// image.json (proto/pool.proto). VMs are made from them by VmStore.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "proto/pool.pb.h"
#include "storage/pool.h"

namespace keel::storage {

struct ImageFiles {
  std::string disk;  // a raw or qcow2 disk image; empty for none
  std::string kernel;
  std::string initrd;
  std::string cmdline;
};

class ImageStore {
 public:
  explicit ImageStore(Pool pool) : pool_(std::move(pool)) {}

  // Imports under `name`: a disk, a kernel or both. InputError naming what
  // is wrong (name taken or not allowed, a file missing, a disk format
  // other than raw or qcow2, a qcow2 with a backing file, the volume too
  // full); a failure leaves no subvolume and no entry.
  pool::v1::Image import(const std::string& name, const ImageFiles& files);
  // Every image, by name; a record that cannot be read is named in
  // `problems` (when given) instead.
  std::vector<pool::v1::Image> list(std::vector<std::string>* problems = nullptr) const;
  // InputError when there is no such image.
  pool::v1::Image get(const std::string& name) const;
  // The VMs made from `name`.
  std::vector<std::string> users(const std::string& name) const;
  // InputError when a VM still uses it, naming the VMs.
  void remove(const std::string& name);

  std::filesystem::path path(const std::string& name) const { return pool_.images() / name; }

 private:
  Pool pool_;
};

}  // namespace keel::storage
