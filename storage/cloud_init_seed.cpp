#include "storage/cloud_init_seed.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

#include "common/error.h"

namespace keel::storage {

namespace {

// YAML's single-quoted scalar: nothing in it is special but the quote.
std::string quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

bool is_ipv6(const std::string& address) {
  return address.find(':') != std::string::npos;
}

}  // namespace

void check_hostname(const std::string& hostname) {
  // RFC 1123 labels: letters, digits and hyphens, not at either end.
  bool ok = !hostname.empty() && hostname.size() <= 253;
  size_t start = 0;
  while (ok && start <= hostname.size()) {
    size_t end = hostname.find('.', start);
    if (end == std::string::npos) end = hostname.size();
    const std::string label = hostname.substr(start, end - start);
    ok = !label.empty() && label.size() <= 63 && label.front() != '-' && label.back() != '-' &&
         std::all_of(label.begin(), label.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-';
         });
    start = end + 1;
  }
  if (!ok) {
    throw InputError("hostname '" + hostname +
                     "' is not a hostname (labels of letters, digits and '-', dot-separated)");
  }
}

void check_address_with_prefix(const std::string& text) {
  const auto slash = text.find('/');
  const std::string address = text.substr(0, slash);
  unsigned char buf[16];
  const bool v6 = is_ipv6(address);
  bool ok =
      slash != std::string::npos && ::inet_pton(v6 ? AF_INET6 : AF_INET, address.c_str(), buf) == 1;
  unsigned prefix = 0;
  if (ok) {
    const char* begin = text.data() + slash + 1;
    const char* end = text.data() + text.size();
    auto [stop, err] = std::from_chars(begin, end, prefix);
    ok = begin != end && err == std::errc() && stop == end && prefix <= (v6 ? 128u : 32u);
  }
  if (!ok) {
    throw InputError("address '" + text +
                     "' is not ADDRESS/PREFIX (such as 192.168.10.5/24 or fd00::5/64)");
  }
}

void check_gateway(const std::string& text, const std::string& address) {
  if (address.empty()) throw InputError("a gateway needs an address (--ip ADDR/PREFIX)");
  unsigned char buf[16];
  const bool v6 = is_ipv6(text);
  if (::inet_pton(v6 ? AF_INET6 : AF_INET, text.c_str(), buf) != 1)
    throw InputError("gateway '" + text + "' is not an IP address");
  if (v6 != is_ipv6(address))
    throw InputError("gateway " + text + " and address " + address + " are not of one IP version");
}

void check_ssh_key(const std::string& line) {
  const bool printable = std::all_of(line.begin(), line.end(), [](char c) {
    return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
  });
  const auto space = line.find(' ');
  const std::string type = line.substr(0, space);
  const bool known =
      type.rfind("ssh-", 0) == 0 || type.rfind("ecdsa-", 0) == 0 || type.rfind("sk-", 0) == 0;
  if (!printable || !known || space == std::string::npos || line.size() > 16384) {
    throw InputError("SSH key '" + line.substr(0, 40) + (line.size() > 40 ? "...'" : "'") +
                     " is not a public key line (ssh-ed25519 AAAA... comment)");
  }
}

std::vector<FatFile> cloud_init_files(const pool::v1::Vm& vm,
                                      const std::optional<std::string>& user_data) {
  std::string meta = "instance-id: " + quoted(vm.instance_id()) + "\n";
  if (!vm.hostname().empty()) meta += "local-hostname: " + quoted(vm.hostname()) + "\n";

  std::string user;
  if (user_data) {
    user = *user_data;
  } else {
    user = "#cloud-config\n";
    if (!vm.ssh_keys().empty()) {
      user += "ssh_authorized_keys:\n";
      for (const auto& key : vm.ssh_keys()) user += "  - " + quoted(key) + "\n";
    }
  }

  // Version 2 network configuration: one adapter, found by its MAC (its
  // name inside the guest is the guest's business).
  std::string net =
      "version: 2\nethernets:\n  keel0:\n    match:\n      macaddress: " + quoted(vm.mac()) + "\n";
  if (vm.address().empty()) {
    net += "    dhcp4: true\n";
  } else {
    net += "    addresses:\n      - " + quoted(vm.address()) + "\n";
    if (!vm.gateway().empty()) {
      net += "    routes:\n      - to: " + quoted(is_ipv6(vm.gateway()) ? "::/0" : "0.0.0.0/0") +
             "\n        via: " + quoted(vm.gateway()) + "\n";
    }
  }
  return {{"meta-data", meta}, {"user-data", user}, {"network-config", net}};
}

}  // namespace keel::storage
