#include "vmm/acpi/table_bytes.h"

#include <stdexcept>
#include <string>

namespace keel::acpi {

namespace {

void check_range(std::size_t size, std::size_t offset, std::size_t width) {
  if (offset > size || width > size - offset) {
    throw std::out_of_range("ACPI table field at offset " + std::to_string(offset) + " (" +
                            std::to_string(width) + " bytes) is outside a " + std::to_string(size) +
                            "-byte table");
  }
}

}  // namespace

void put_le(std::span<uint8_t> bytes, std::size_t offset, uint64_t value, std::size_t width) {
  if (width > 8) throw std::invalid_argument("ACPI field wider than 8 bytes");
  check_range(bytes.size(), offset, width);
  for (std::size_t i = 0; i < width; ++i) {
    bytes[offset + i] = static_cast<uint8_t>(value >> (8 * i));
  }
}

void put_text(std::span<uint8_t> bytes, std::size_t offset, std::string_view text) {
  check_range(bytes.size(), offset, text.size());
  for (std::size_t i = 0; i < text.size(); ++i) bytes[offset + i] = static_cast<uint8_t>(text[i]);
}

uint64_t get_le(std::span<const uint8_t> bytes, std::size_t offset, std::size_t width) {
  if (width > 8) throw std::invalid_argument("ACPI field wider than 8 bytes");
  check_range(bytes.size(), offset, width);
  uint64_t value = 0;
  for (std::size_t i = 0; i < width; ++i) value |= uint64_t{bytes[offset + i]} << (8 * i);
  return value;
}

uint8_t byte_sum(std::span<const uint8_t> bytes) {
  uint8_t sum = 0;
  for (uint8_t b : bytes) sum = static_cast<uint8_t>(sum + b);
  return sum;
}

void set_checksum(std::span<uint8_t> bytes, std::size_t checksum_offset) {
  check_range(bytes.size(), checksum_offset, 1);
  bytes[checksum_offset] = 0;
  bytes[checksum_offset] = static_cast<uint8_t>(0x100 - byte_sum(bytes));
}

std::vector<uint8_t> make_sdt(std::string_view signature, uint8_t revision, std::size_t length) {
  if (signature.size() != 4) throw std::invalid_argument("ACPI table signature must be 4 bytes");
  if (length < kSdtHeaderSize) throw std::invalid_argument("ACPI table shorter than its header");
  std::vector<uint8_t> table(length, 0);
  // System Description Table Header, ACPI 6.3 §5.2.6 (Table 5-29).
  put_text(table, 0, signature);
  put_u32(table, 4, static_cast<uint32_t>(length));
  put_u8(table, 8, revision);
  // offset 9: checksum, set by finish_sdt
  put_text(table, 10, kOemId);
  put_text(table, 16, kOemTableId);
  put_u32(table, 24, kOemRevision);
  put_text(table, 28, kCreatorId);
  put_u32(table, 32, kCreatorRevision);
  return table;
}

void finish_sdt(std::span<uint8_t> table) {
  set_checksum(table, kSdtChecksumOffset);
}

void put_generic_address(std::span<uint8_t> bytes, std::size_t offset, const GenericAddress& gas) {
  check_range(bytes.size(), offset, kGenericAddressSize);
  put_u8(bytes, offset + 0, static_cast<uint8_t>(gas.space));
  put_u8(bytes, offset + 1, gas.bit_width);
  put_u8(bytes, offset + 2, gas.bit_offset);
  put_u8(bytes, offset + 3, static_cast<uint8_t>(gas.access_size));
  put_u64(bytes, offset + 4, gas.address);
}

}  // namespace keel::acpi
