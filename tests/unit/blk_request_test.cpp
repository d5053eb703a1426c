#include "devices/virtio/blk/blk_request.h"

#include <gtest/gtest.h>

namespace keel::virtio {
namespace {

using Error = BlkRequestError;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kHdr = 0x1000;     // header buffers
constexpr uint64_t kData = 0x10000;   // data buffers
constexpr uint64_t kStatus = 0x8000;  // status bytes
constexpr uint64_t kCapacity = 2048;  // sectors: 1 MiB disk

struct BlkRequestTest : ::testing::Test {
  GuestMemory memory{{{0, kMiB, 0}}};
  BlkDeviceInfo info{kCapacity, false, true, true, 1024, 4, 1024, 4};

  void header(uint64_t gpa, uint32_t type, uint64_t sector) {
    memory.write_obj(gpa, BlkReqHeader{type, 0, sector});
  }
  static DescriptorChain chain(std::initializer_list<ChainSegment> segments) {
    DescriptorChain c;
    c.head = 7;
    for (const auto& s : segments) {
      c.segments.push_back(s);
      (s.writable ? c.writable_bytes : c.readable_bytes) += s.len;
    }
    return c;
  }
  BlkParseResult parse(const DescriptorChain& c) { return parse_blk_request(c, memory, info); }
  BlkRequest parse_ok(const DescriptorChain& c) {
    auto result = parse(c);
    if (auto* rejected = std::get_if<BlkRequestRejection>(&result)) {
      ADD_FAILURE() << "rejected: " << to_string(rejected->error);
      return {};
    }
    return std::get<BlkRequest>(result);
  }
  void expect_rejected(const DescriptorChain& c, Error error, uint8_t status = kBlkSIoErr,
                       std::optional<uint64_t> status_gpa = kStatus) {
    auto result = parse(c);
    auto* rejected = std::get_if<BlkRequestRejection>(&result);
    ASSERT_TRUE(rejected) << "accepted, expected " << to_string(error);
    EXPECT_EQ(rejected->error, error) << to_string(rejected->error);
    EXPECT_EQ(rejected->status, status);
    EXPECT_EQ(rejected->status_gpa, status_gpa);
  }
  // header | data | status, the layout Linux uses; data direction by type.
  DescriptorChain simple(uint32_t type, uint64_t sector, uint32_t data_len, bool data_writable) {
    header(kHdr, type, sector);
    if (data_len == 0) return chain({{kHdr, 16, false}, {kStatus, 1, true}});
    return chain({{kHdr, 16, false}, {kData, data_len, data_writable}, {kStatus, 1, true}});
  }
  void range(uint64_t gpa, uint64_t sector, uint32_t num, uint32_t flags) {
    memory.write_obj(gpa, BlkDiscardWriteZeroes{sector, num, flags});
  }
};

// --- accepted requests ----------------------------------------------------

TEST_F(BlkRequestTest, Read) {
  auto req = parse_ok(simple(kBlkTIn, 8, 4096, true));
  EXPECT_EQ(req.type, BlkRequestType::kIn);
  EXPECT_EQ(req.sector, 8u);
  EXPECT_EQ(req.data, (std::vector<BlkDataSegment>{{kData, 4096}}));
  EXPECT_EQ(req.data_len, 4096u);
  EXPECT_EQ(req.status_gpa, kStatus);
}

TEST_F(BlkRequestTest, WriteOverSeveralBuffersUpToTheLastSector) {
  header(kHdr, kBlkTOut, kCapacity - 3);
  auto req = parse_ok(chain(
      {{kHdr, 16, false}, {kData, 512, false}, {kData + 0x1000, 1024, false}, {kStatus, 1, true}}));
  EXPECT_EQ(req.type, BlkRequestType::kOut);
  EXPECT_EQ(req.sector, kCapacity - 3);
  EXPECT_EQ(req.data, (std::vector<BlkDataSegment>{{kData, 512}, {kData + 0x1000, 1024}}));
  EXPECT_EQ(req.data_len, 1536u);
}

TEST_F(BlkRequestTest, HeaderSharingADescriptorWithData) {
  header(kData, kBlkTOut, 1);
  auto req = parse_ok(chain({{kData, 16 + 1024, false}, {kStatus, 1, true}}));
  EXPECT_EQ(req.sector, 1u);
  EXPECT_EQ(req.data, (std::vector<BlkDataSegment>{{kData + 16, 1024}}));
}

TEST_F(BlkRequestTest, HeaderSplitAcrossDescriptors) {
  header(0x3000 - 8, kBlkTOut, 0x0102030405060708ull & 0x3ff);  // straddles two buffers
  uint8_t bytes[16];
  memory.read(0x3000 - 8, bytes);
  memory.write(kHdr, {bytes, 8});
  memory.write(kData, {bytes + 8, 8});
  auto req = parse_ok(chain({{kHdr, 8, false}, {kData, 8 + 512, false}, {kStatus, 1, true}}));
  EXPECT_EQ(req.type, BlkRequestType::kOut);
  EXPECT_EQ(req.sector, 0x0102030405060708ull & 0x3ff);
  EXPECT_EQ(req.data, (std::vector<BlkDataSegment>{{kData + 8, 512}}));
}

TEST_F(BlkRequestTest, StatusSharingADescriptorWithData) {
  header(kHdr, kBlkTIn, 0);
  auto req = parse_ok(chain({{kHdr, 16, false}, {kData, 512 + 1, true}}));
  EXPECT_EQ(req.data, (std::vector<BlkDataSegment>{{kData, 512}}));
  EXPECT_EQ(req.status_gpa, kData + 512);
}

TEST_F(BlkRequestTest, EmptyReadAtTheEndIsAccepted) {
  auto req = parse_ok(simple(kBlkTIn, kCapacity, 0, true));
  EXPECT_TRUE(req.data.empty());
}

TEST_F(BlkRequestTest, FlushAndGetIdAlsoOnReadOnlyDisks) {
  info.read_only = true;
  EXPECT_EQ(parse_ok(simple(kBlkTFlush, 0, 0, false)).type, BlkRequestType::kFlush);
  auto id = parse_ok(simple(kBlkTGetId, 0, kBlkIdBytes, true));
  EXPECT_EQ(id.type, BlkRequestType::kGetId);
  EXPECT_EQ(id.data_len, kBlkIdBytes);
  EXPECT_EQ(parse_ok(simple(kBlkTIn, 0, 512, true)).type, BlkRequestType::kIn);
}

TEST_F(BlkRequestTest, DiscardAndWriteZeroesRanges) {
  range(kData, 0, 8, 0);
  range(kData + 16, 100, 1024, 0);
  auto discard = parse_ok(simple(kBlkTDiscard, 0, 32, false));
  EXPECT_EQ(discard.type, BlkRequestType::kDiscard);
  EXPECT_EQ(discard.ranges, (std::vector<BlkRange>{{0, 8, false}, {100, 1024, false}}));

  range(kData, kCapacity - 8, 8, kBlkRangeFlagUnmap);
  auto zeroes = parse_ok(simple(kBlkTWriteZeroes, 0, 16, false));
  EXPECT_EQ(zeroes.type, BlkRequestType::kWriteZeroes);
  EXPECT_EQ(zeroes.ranges, (std::vector<BlkRange>{{kCapacity - 8, 8, true}}));
}

// --- one test per rejection -----------------------------------------------

TEST_F(BlkRequestTest, MalformedChainsHaveNoStatus) {
  header(kHdr, kBlkTIn, 0);
  expect_rejected(chain({{kHdr, 16, false}, {kMiB - 8, 16, true}, {kStatus, 1, true}}),
                  Error::kMalformedChain, kBlkSIoErr, std::nullopt);
  expect_rejected(
      chain({{kHdr, 16, false}, {kData, 512, true}, {kData, 16, false}, {kStatus, 1, true}}),
      Error::kMalformedChain, kBlkSIoErr, std::nullopt);
  DescriptorChain huge;
  for (int i = 0; i < 5; ++i) huge.segments.push_back({0, 0xffffffffu & ~uint32_t{0xfffff}, false});
  GuestMemory big({{0, 0x100000000ull, 0}});  // sparse
  huge.segments.push_back({kStatus, 1, true});
  auto result = parse_blk_request(huge, big, info);
  ASSERT_TRUE(std::holds_alternative<BlkRequestRejection>(result));
  EXPECT_EQ(std::get<BlkRequestRejection>(result).error, Error::kMalformedChain);
}

TEST_F(BlkRequestTest, NoStatusByte) {
  header(kHdr, kBlkTIn, 0);
  expect_rejected(chain({}), Error::kNoStatusByte, kBlkSIoErr, std::nullopt);
  expect_rejected(chain({{kHdr, 16, false}}), Error::kNoStatusByte, kBlkSIoErr, std::nullopt);
  expect_rejected(chain({{kHdr, 16, false}, {kStatus, 0, true}}), Error::kNoStatusByte, kBlkSIoErr,
                  std::nullopt);
}

TEST_F(BlkRequestTest, HeaderTooShort) {
  expect_rejected(chain({{kHdr, 15, false}, {kStatus, 1, true}}), Error::kHeaderTooShort);
  expect_rejected(chain({{kStatus, 1, true}}), Error::kHeaderTooShort);
}

TEST_F(BlkRequestTest, ReadOnlyDisksRefuseWrites) {
  info.read_only = true;
  expect_rejected(simple(kBlkTOut, 0, 512, false), Error::kReadOnly);
  range(kData, 0, 8, 0);
  expect_rejected(simple(kBlkTDiscard, 0, 16, false), Error::kReadOnly);
  expect_rejected(simple(kBlkTWriteZeroes, 0, 16, false), Error::kReadOnly);
}

TEST_F(BlkRequestTest, WrongDataDirection) {
  expect_rejected(simple(kBlkTIn, 0, 512, false), Error::kWrongDataDirection);
  expect_rejected(simple(kBlkTOut, 0, 512, true), Error::kWrongDataDirection);
  expect_rejected(simple(kBlkTGetId, 0, 20, false), Error::kWrongDataDirection);
  expect_rejected(simple(kBlkTDiscard, 0, 16, true), Error::kWrongDataDirection);
}

TEST_F(BlkRequestTest, DataNotASectorMultiple) {
  expect_rejected(simple(kBlkTIn, 0, 511, true), Error::kDataNotSectorMultiple);
  expect_rejected(simple(kBlkTOut, 0, 513, false), Error::kDataNotSectorMultiple);
}

// 5.2.4: seg_max and size_max, as the device advertised them, bound what
// one request may ask of the disk.
TEST_F(BlkRequestTest, DataBeyondSegMaxOrSizeMaxIsRefused) {
  info.seg_max = 2;
  info.size_max = 4096;
  header(kHdr, kBlkTIn, 0);
  EXPECT_EQ(parse_ok(chain({{kHdr, 16, false},
                            {kData, 4096, true},
                            {kData + 4096, 4096, true},
                            {kStatus, 1, true}}))
                .data.size(),
            2u);
  expect_rejected(chain({{kHdr, 16, false},
                         {kData, 4096, true},
                         {kData + 4096, 4096, true},
                         {kData + 8192, 512, true},
                         {kStatus, 1, true}}),
                  Error::kTooManySegments);
  expect_rejected(simple(kBlkTOut, 0, 8192, false), Error::kSegmentTooLarge);
  // Other request types are bounded by their own limits.
  EXPECT_EQ(parse_ok(simple(kBlkTGetId, 0, 8192, true)).type, BlkRequestType::kGetId);
}

TEST_F(BlkRequestTest, OutOfRange) {
  expect_rejected(simple(kBlkTIn, kCapacity, 512, true), Error::kOutOfRange);
  expect_rejected(simple(kBlkTIn, kCapacity - 1, 1024, true), Error::kOutOfRange);
  expect_rejected(simple(kBlkTOut, ~uint64_t{0}, 512, false), Error::kOutOfRange);  // would wrap
  expect_rejected(simple(kBlkTIn, kCapacity + 1, 0, true), Error::kOutOfRange);
  range(kData, kCapacity - 7, 8, 0);
  expect_rejected(simple(kBlkTDiscard, 0, 16, false), Error::kOutOfRange);
  range(kData, ~uint64_t{0} - 3, 8, 0);
  expect_rejected(simple(kBlkTWriteZeroes, 0, 16, false), Error::kOutOfRange);
}

TEST_F(BlkRequestTest, FlushWithData) {
  expect_rejected(simple(kBlkTFlush, 0, 512, false), Error::kUnexpectedData);
  expect_rejected(simple(kBlkTFlush, 0, 512, true), Error::kUnexpectedData);
}

TEST_F(BlkRequestTest, GetIdWithoutABuffer) {
  expect_rejected(simple(kBlkTGetId, 0, 0, true), Error::kNoIdBuffer);
}

TEST_F(BlkRequestTest, BadRangeList) {
  expect_rejected(simple(kBlkTDiscard, 0, 0, false), Error::kBadRangeList);
  expect_rejected(simple(kBlkTWriteZeroes, 0, 17, false), Error::kBadRangeList);
}

TEST_F(BlkRequestTest, TooManyRanges) {
  for (int i = 0; i < 5; ++i) range(kData + 16 * i, i, 1, 0);
  expect_rejected(simple(kBlkTDiscard, 0, 5 * 16, false), Error::kTooManyRanges);
  info.max_write_zeroes_seg = 0xffffffffu;  // still bounded by kMaxBlkRanges
  expect_rejected(simple(kBlkTWriteZeroes, 0, 16 * (kMaxBlkRanges + 1), false),
                  Error::kTooManyRanges);
}

TEST_F(BlkRequestTest, RangeTooLarge) {
  range(kData, 0, 1025, 0);
  expect_rejected(simple(kBlkTDiscard, 0, 16, false), Error::kRangeTooLarge);
  expect_rejected(simple(kBlkTWriteZeroes, 0, 16, false), Error::kRangeTooLarge);
}

TEST_F(BlkRequestTest, UnsupportedTypes) {
  for (uint32_t type : {2u, 3u, 5u, 10u, 14u, 99u, 0xffffffffu}) {
    expect_rejected(simple(type, 0, 0, false), Error::kUnsupportedType, kBlkSUnsupp);
  }
  info.discard = false;
  info.write_zeroes = false;
  range(kData, 0, 8, 0);
  expect_rejected(simple(kBlkTDiscard, 0, 16, false), Error::kUnsupportedType, kBlkSUnsupp);
  expect_rejected(simple(kBlkTWriteZeroes, 0, 16, false), Error::kUnsupportedType, kBlkSUnsupp);
}

TEST_F(BlkRequestTest, ReservedRangeFlags) {
  range(kData, 0, 8, 2);
  expect_rejected(simple(kBlkTWriteZeroes, 0, 16, false), Error::kReservedRangeFlags, kBlkSUnsupp);
  range(kData, 0, 8, 0x80000000u);
  expect_rejected(simple(kBlkTDiscard, 0, 16, false), Error::kReservedRangeFlags, kBlkSUnsupp);
}

TEST_F(BlkRequestTest, UnmapOnDiscard) {
  range(kData, 0, 8, 0);
  range(kData + 16, 8, 8, kBlkRangeFlagUnmap);
  expect_rejected(simple(kBlkTDiscard, 0, 32, false), Error::kUnmapOnDiscard, kBlkSUnsupp);
}

TEST_F(BlkRequestTest, EveryErrorHasAName) {
  for (int e = 0; e <= static_cast<int>(Error::kUnmapOnDiscard); ++e) {
    EXPECT_STRNE(to_string(static_cast<Error>(e)), "unknown virtio-blk request error");
  }
}

}  // namespace
}  // namespace keel::virtio
