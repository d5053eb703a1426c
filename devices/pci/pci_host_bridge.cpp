#include "devices/pci/pci_host_bridge.h"

namespace keel {

namespace {
// The Red Hat / QEMU "PCIe host bridge" ID, which guests know as a generic
// virtual host bridge; class 06.00.00 is "host bridge".
constexpr uint16_t kVendor = 0x1b36;
constexpr uint16_t kDevice = 0x0008;
constexpr uint32_t kClassHostBridge = 0x060000;
}  // namespace

PciHostBridge::PciHostBridge() : config_(kVendor, kDevice, kClassHostBridge, 0) {}

}  // namespace keel
