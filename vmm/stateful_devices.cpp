#include "vmm/stateful_devices.h"

#include <map>
#include <stdexcept>

#include "common/error.h"

namespace keel {

namespace st = state::v1;

void StatefulDevices::add(std::string id, Kind kind, std::function<void(st::DeviceState&)> save,
                          std::function<void(const st::DeviceState&)> restore) {
  for (const Device& d : devices_) {
    if (d.id == id) throw std::logic_error("device id " + id + " added twice");
  }
  devices_.push_back({std::move(id), kind, std::move(save), std::move(restore)});
}

void StatefulDevices::save_all(google::protobuf::RepeatedPtrField<st::DeviceState>& out) const {
  for (const Device& d : devices_) {
    st::DeviceState* state = out.Add();
    d.save(*state);
    state->set_id(d.id);
  }
}

void StatefulDevices::restore_all(
    const google::protobuf::RepeatedPtrField<st::DeviceState>& states) const {
  std::map<std::string, const st::DeviceState*> by_id;
  for (const st::DeviceState& s : states) {
    if (s.id().empty()) throw InputError("state: a device state without an id");
    if (!by_id.emplace(s.id(), &s).second)
      throw InputError("state: device " + s.id() + " given twice");
  }
  for (const Device& d : devices_) {
    const auto it = by_id.find(d.id);
    if (it == by_id.end())
      throw InputError("state: no state for device " + d.id + " of this machine");
    if (it->second->device_case() != d.kind) {
      throw InputError("state: device " + d.id + " holds another kind of device's state");
    }
  }
  if (by_id.size() != devices_.size()) {
    for (const auto& [id, s] : by_id) {
      bool known = false;
      for (const Device& d : devices_) known |= d.id == id;
      if (!known) throw InputError("state: device " + id + " is not part of this machine");
    }
  }
  for (const Device& d : devices_) d.restore(*by_id.at(d.id));
}

}  // namespace keel
