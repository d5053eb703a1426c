// What a pool exports over NBD: each VM's disk under the VM's name
// (vms/NAME/current/disk.raw, writable), looked up afresh for every client,
// opened only by the client addresses the allow-list names for it (the
// cluster will use it to fence a host out of a disk).
#pragma once

#include <map>
#include <set>
#include <string>

#include "storage/nbd_negotiation.h"
#include "storage/vm_store.h"

namespace keel::storage {

class PoolNbdCatalog : public NbdCatalog {
 public:
  // `allow`: export name (or "*" for every export) to client addresses.
  PoolNbdCatalog(VmStore vms, std::map<std::string, std::set<std::string>> allow)
      : vms_(std::move(vms)), allow_(std::move(allow)) {}

  std::vector<std::string> names_for(const std::string& client) const override;
  Lookup find(const std::string& name, const std::string& client) const override;

  // "VM=ADDR[,ADDR...]" or "*=ADDR[,...]" (keelctl nbd serve --allow) into
  // `allow`; InputError naming the rule when it is not that.
  static void add_rule(const std::string& rule,
                       std::map<std::string, std::set<std::string>>& allow);

 private:
  bool allowed(const std::string& name, const std::string& client) const;

  VmStore vms_;
  std::map<std::string, std::set<std::string>> allow_;
};

}  // namespace keel::storage
