// A disk's or network adapter's configuration (proto/vm_config.proto) in
// one expression, for tests that build devices directly.
#pragma once

#include <optional>
#include <string>

#include "devices/virtio/net/mac_address.h"
#include "proto/vm_config.pb.h"

namespace keel {

inline state::v1::DiskConfig disk_config(const std::string& path, bool readonly = false,
                                         const std::string& serial = "") {
  state::v1::DiskConfig c;
  c.set_path(path);
  c.set_readonly(readonly);
  c.set_serial(serial);
  return c;
}

// No MAC: the device makes up a random one.
inline state::v1::NetConfig net_config(const std::string& tap, std::optional<MacAddress> mac) {
  state::v1::NetConfig c;
  c.set_tap(tap);
  if (mac) c.set_mac(std::string(mac->begin(), mac->end()));
  return c;
}

}  // namespace keel
