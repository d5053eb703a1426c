// A pool's VMs. Each is a directory vms/NAME holding
//   current/          its subvolume: a writable snapshot of its image (disk,
//                     kernel, initrd), vm.json (proto/pool.proto), the
//                     cloud-init seed disk seed.img and the operator's
//                     user-data when one was given
//   snapshots/SNAP    read-only snapshots of current
//   console.log       what the guest printed while started by `vm start`
// vms/NAME appears only once whole (built under a hidden name and renamed),
// so a failed create leaves no subvolume and no entry.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "proto/pool.pb.h"
#include "storage/pool.h"

namespace keel::storage {

struct VmSpec {
  std::string name;
  std::string image;
  uint32_t cpus = 1;
  uint64_t memory_bytes = uint64_t{512} << 20;
  uint64_t disk_bytes = 0;  // 0: the image's disk as it is
  std::string hostname;     // empty: the VM's name
  std::string address;      // ADDR/PREFIX; empty: DHCP
  std::string gateway;
  std::vector<std::string> ssh_keys;  // public key lines
  std::optional<std::string> user_data;
  std::string tap;  // an existing tap device for its network adapter; empty: none
};

struct VmSnapshot {
  std::string name;
  std::string created_at;  // from the subvolume's creation time, UTC
};

class VmStore {
 public:
  explicit VmStore(Pool pool) : pool_(std::move(pool)) {}

  // InputError naming what is wrong: the name, an unknown image or one
  // without a kernel, a disk size below the image's, a setting that is
  // not what it claims, the volume too full. Nothing is left on failure.
  pool::v1::Vm create(const VmSpec& spec);
  std::vector<pool::v1::Vm> list(std::vector<std::string>* problems = nullptr) const;
  pool::v1::Vm get(const std::string& name) const;
  void remove(const std::string& name);

  // A read-only snapshot of the VM's subvolume. `snapshot` must be new.
  void snapshot(const std::string& name, const std::string& snapshot);
  std::vector<VmSnapshot> snapshots(const std::string& name) const;
  // The VM's subvolume becomes a writable snapshot of `snapshot` again;
  // the snapshots stay. The VM must not be running (the caller checks).
  // When the snapshot holds the guest's memory (.memory/SNAP, written by
  // keel-vmm while the guest was paused), the next start resumes it.
  void rollback(const std::string& name, const std::string& snapshot);
  // After a start that resumed from memory: the state is dropped, the next
  // start boots.
  void forget_resume_state(const std::string& name);
  void delete_snapshot(const std::string& name, const std::string& snapshot);
  // A new VM from `source`'s current state (or from one of its snapshots):
  // the disk shared copy-on-write, a new MAC and instance ID, the hostname
  // `hostname` (default: the new name), a new seed disk.
  pool::v1::Vm clone(const std::string& source, const std::string& name,
                     const std::string& from_snapshot = "", const std::string& hostname = "");

  // A copy of a VM another host stores, for the replica this host keeps of
  // it (high availability): `vm` as its record, the boot files and the
  // seed disk found in `files` (kernel, initrd, seed.img: copied in), and
  // an empty disk of its size that the replica stream fills. InputError
  // when the pool has a VM of that name, the record is not valid, or the
  // volume has no room for the disk.
  pool::v1::Vm receive_copy(const pool::v1::Vm& vm, const std::filesystem::path& files);

  std::filesystem::path path(const std::string& name) const { return pool_.vms() / name; }
  std::filesystem::path current(const std::string& name) const { return path(name) / "current"; }
  const Pool& pool() const { return pool_; }

 private:
  Pool pool_;
};

}  // namespace keel::storage
