#include "common/size_parse.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace keel {
namespace {

TEST(ParseSize, AcceptsBinarySuffixes) {
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("512M"), 512ull << 20);
  EXPECT_EQ(parse_size("4G"), 4ull << 30);
  EXPECT_EQ(parse_size("2k"), 2048u);
  EXPECT_EQ(parse_size("1T"), 1ull << 40);
  EXPECT_EQ(parse_size("3GiB"), 3ull << 30);
}

TEST(ParseSize, RefusesGarbageNamingIt) {
  for (const char* bad : {"", "M", "12X", "1.5G", "-1G", "4GB", "99999999999999999999"}) {
    try {
      parse_size(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos)
          << e.what();
    }
  }
}

TEST(ParseSize, RefusesOverflowThroughSuffix) {
  EXPECT_THROW(parse_size("17179869184G"), InputError);
}

}  // namespace
}  // namespace keel
