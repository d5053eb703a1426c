#include "storage/pool_nbd_catalog.h"

#include <arpa/inet.h>

#include <filesystem>

#include "common/error.h"

namespace keel::storage {

bool PoolNbdCatalog::allowed(const std::string& name, const std::string& client) const {
  for (const std::string& key : {name, std::string("*")}) {
    auto it = allow_.find(key);
    if (it != allow_.end() && it->second.count(client)) return true;
  }
  return false;
}

std::vector<std::string> PoolNbdCatalog::names_for(const std::string& client) const {
  std::vector<std::string> names;
  for (const auto& vm : vms_.list()) {
    if (vm.disk_bytes() != 0 && allowed(vm.name(), client)) names.push_back(vm.name());
  }
  return names;
}

NbdCatalog::Lookup PoolNbdCatalog::find(const std::string& name, const std::string& client) const {
  Lookup lookup;
  pool::v1::Vm vm;
  try {
    vm = vms_.get(name);
  } catch (const InputError&) {
    return lookup;  // unknown (a name that is not a VM's is not one either)
  }
  if (vm.disk_bytes() == 0) return lookup;
  if (!allowed(name, client)) {
    lookup.verdict = Verdict::kNotAllowed;
    return lookup;
  }
  const auto path = vms_.current(name) / "disk.raw";
  // Only the VM's own regular file: a link put there would export its target.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(std::filesystem::symlink_status(path, ec))) return lookup;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return lookup;
  lookup.verdict = Verdict::kOpen;
  lookup.export_ = {name, path.string(), "disk of Keel VM " + name, size, false, nullptr};
  return lookup;
}

void PoolNbdCatalog::add_rule(const std::string& rule,
                              std::map<std::string, std::set<std::string>>& allow) {
  const auto eq = rule.find('=');
  const std::string name = rule.substr(0, eq);
  if (eq == std::string::npos || name.empty() || eq + 1 == rule.size())
    throw InputError("--allow '" + rule + "' is not VM=ADDRESS[,ADDRESS...] (or *=ADDRESS...)");
  if (name != "*") check_pool_name("VM", name);
  size_t start = eq + 1;
  while (start <= rule.size()) {
    size_t comma = rule.find(',', start);
    if (comma == std::string::npos) comma = rule.size();
    const std::string address = rule.substr(start, comma - start);
    // Kept as inet_ntop writes it, which is how a client's address is named.
    unsigned char buf[16];
    char text[INET6_ADDRSTRLEN] = {};
    if (::inet_pton(AF_INET, address.c_str(), buf) == 1) {
      ::inet_ntop(AF_INET, buf, text, sizeof text);
    } else if (::inet_pton(AF_INET6, address.c_str(), buf) == 1) {
      ::inet_ntop(AF_INET6, buf, text, sizeof text);
    } else {
      throw InputError("--allow '" + rule + "': '" + address + "' is not an IP address");
    }
    allow[name].insert(text);
    start = comma + 1;
  }
}

}  // namespace keel::storage
