#include "devices/virtio/net/announce_frame.h"

namespace keel::virtio {

std::vector<uint8_t> rarp_announce_frame(const MacAddress& mac) {
  std::vector<uint8_t> f;
  f.reserve(kAnnounceFrameBytes);
  auto put16 = [&f](uint16_t v) {
    f.push_back(static_cast<uint8_t>(v >> 8));
    f.push_back(static_cast<uint8_t>(v));
  };
  auto put_mac = [&f](const MacAddress& m) { f.insert(f.end(), m.begin(), m.end()); };
  const MacAddress broadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  put_mac(broadcast);  // Ethernet: destination, source, EtherType
  put_mac(mac);
  put16(0x8035);
  put16(1);       // hardware: Ethernet
  put16(0x0800);  // protocol: IPv4
  f.push_back(6);
  f.push_back(4);
  put16(3);  // request reverse
  put_mac(mac);
  f.insert(f.end(), 4, 0);  // sender IP: unknown
  put_mac(mac);
  f.insert(f.end(), 4, 0);  // target IP: unknown
  f.resize(kAnnounceFrameBytes, 0);
  return f;
}

}  // namespace keel::virtio
