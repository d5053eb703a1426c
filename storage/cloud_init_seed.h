// The cloud-init NoCloud seed disk of a VM: a FAT image labelled "cidata"
// with meta-data (instance ID, hostname), network-config (version 2: the
// adapter matched by its MAC, a static address or DHCP) and user-data (the
// operator's file, or Keel's #cloud-config carrying the SSH keys).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "proto/pool.pb.h"
#include "storage/fat_image.h"

namespace keel::storage {

// The files, from settings VmStore checked before.
std::vector<FatFile> cloud_init_files(const pool::v1::Vm& vm,
                                      const std::optional<std::string>& user_data);

// InputError naming the setting when it is not a hostname, not ADDR/PREFIX,
// not an address, or not an SSH public key line.
void check_hostname(const std::string& hostname);
void check_address_with_prefix(const std::string& text);
void check_gateway(const std::string& text, const std::string& address);
void check_ssh_key(const std::string& line);

}  // namespace keel::storage
