// Byte-level helpers shared by the table builders: little-endian stores
// (ACPI 6.3 §5.2: all multi-byte table fields are little-endian), checksums,
// the common table header and Generic Address Structures.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace keel::acpi {

inline constexpr std::string_view kOemId = "KEEL  ";         // 6 bytes
inline constexpr std::string_view kOemTableId = "KEELVMM ";  // 8 bytes
inline constexpr uint32_t kOemRevision = 1;
inline constexpr std::string_view kCreatorId = "KEEL";  // 4 bytes
inline constexpr uint32_t kCreatorRevision = 1;

// Size of the System Description Table Header (ACPI 6.3 §5.2.6).
inline constexpr std::size_t kSdtHeaderSize = 36;
inline constexpr std::size_t kSdtChecksumOffset = 9;

// Stores the low `width` bytes of value at offset, least significant first.
// Throws std::out_of_range if the field does not fit: a bug in a table builder.
void put_le(std::span<uint8_t> bytes, std::size_t offset, uint64_t value, std::size_t width);
inline void put_u8(std::span<uint8_t> b, std::size_t off, uint8_t v) {
  put_le(b, off, v, 1);
}
inline void put_u16(std::span<uint8_t> b, std::size_t off, uint16_t v) {
  put_le(b, off, v, 2);
}
inline void put_u32(std::span<uint8_t> b, std::size_t off, uint32_t v) {
  put_le(b, off, v, 4);
}
inline void put_u64(std::span<uint8_t> b, std::size_t off, uint64_t v) {
  put_le(b, off, v, 8);
}

// Copies text byte for byte (no terminator).
void put_text(std::span<uint8_t> bytes, std::size_t offset, std::string_view text);

// Reads a little-endian field; the inverse of put_le.
uint64_t get_le(std::span<const uint8_t> bytes, std::size_t offset, std::size_t width);

// Sum of all bytes modulo 256; a valid table sums to 0 (ACPI 6.3 §5.2.6).
uint8_t byte_sum(std::span<const uint8_t> bytes);

// Sets bytes[checksum_offset] so that the whole span sums to 0.
void set_checksum(std::span<uint8_t> bytes, std::size_t checksum_offset);

// A zero-filled table of `length` bytes with its header filled in (signature,
// length, revision, OEM and creator fields). The checksum is left 0: call
// finish_sdt once the body is written.
std::vector<uint8_t> make_sdt(std::string_view signature, uint8_t revision, std::size_t length);
void finish_sdt(std::span<uint8_t> table);

// Generic Address Structure (ACPI 6.3 §5.2.3.2), 12 bytes.
inline constexpr std::size_t kGenericAddressSize = 12;
enum class AddressSpace : uint8_t { kSystemMemory = 0, kSystemIo = 1 };
enum class AccessSize : uint8_t { kUndefined = 0, kByte = 1, kWord = 2, kDword = 3, kQword = 4 };
struct GenericAddress {
  AddressSpace space = AddressSpace::kSystemIo;
  uint8_t bit_width = 0;
  uint8_t bit_offset = 0;
  AccessSize access_size = AccessSize::kUndefined;
  uint64_t address = 0;
};
void put_generic_address(std::span<uint8_t> bytes, std::size_t offset, const GenericAddress& gas);

}  // namespace keel::acpi
