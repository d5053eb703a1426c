// The machine's devices whose state a snapshot, a migration or a replica
// carries, each under a stable id ("com1", "disk0", ...): a state names its
// devices, so it does not depend on the order a build made them in, and a
// state for another machine is refused by name.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "proto/device_state.pb.h"

namespace keel {

class StatefulDevices {
 public:
  using Kind = state::v1::DeviceState::DeviceCase;
  // `save` fills its kind of DeviceState (with the vCPUs paused; it may
  // quiesce the device); `restore` checks the state as untrusted input.
  void add(std::string id, Kind kind, std::function<void(state::v1::DeviceState&)> save,
           std::function<void(const state::v1::DeviceState&)> restore);

  // One DeviceState per device, in the order they were added, ids set.
  void save_all(google::protobuf::RepeatedPtrField<state::v1::DeviceState>& out) const;
  // Checks first that `states` names each device once, no other, each with
  // its kind (InputError naming the first problem; nothing restored), then
  // restores each.
  void restore_all(const google::protobuf::RepeatedPtrField<state::v1::DeviceState>& states) const;

  size_t size() const { return devices_.size(); }

 private:
  struct Device {
    std::string id;
    Kind kind;
    std::function<void(state::v1::DeviceState&)> save;
    std::function<void(const state::v1::DeviceState&)> restore;
  };
  std::vector<Device> devices_;
};

}  // namespace keel
