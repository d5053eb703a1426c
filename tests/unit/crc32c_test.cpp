#include "common/crc32c.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace keel {
namespace {

TEST(Crc32c, KnownValues) {
  // RFC 3720 B.4 check value, and the empty input.
  const std::string digits = "123456789";
  EXPECT_EQ(crc32c(digits.data(), digits.size()), 0xe3069283u);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  std::vector<uint8_t> zeros(32, 0);
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8a9136aau);
}

TEST(Crc32c, ContinuesAcrossCallsAndOddLengths) {
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 + 7);
  const uint32_t whole = crc32c(data.data(), data.size());
  for (size_t cut : {0, 1, 7, 8, 9, 500, 999}) {
    uint32_t part = crc32c(data.data(), cut);
    EXPECT_EQ(crc32c(data.data() + cut, data.size() - cut, part), whole) << cut;
  }
  data[500] ^= 1;
  EXPECT_NE(crc32c(data.data(), data.size()), whole);
}

}  // namespace
}  // namespace keel
