// The passive's epoch assembly (migration/stream/epoch_assembler.h): the
// first copy written at once, later epochs handed over whole only when
// their number and counts check out.
#include "migration/stream/epoch_assembler.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <string>

#include "proto/migration.pb.h"

namespace keel::migration {
namespace {

std::vector<uint8_t> batch(std::vector<std::pair<uint64_t, int>> pages) {
  std::vector<uint8_t> out;
  for (auto [index, fill] : pages) {
    const uint64_t word = encode_page_entry(index, fill < 0);
    const auto* w = reinterpret_cast<const uint8_t*>(&word);
    out.insert(out.end(), w, w + 8);
    if (fill >= 0) out.insert(out.end(), kPageSize, static_cast<uint8_t>(fill));
  }
  return out;
}

std::vector<uint8_t> encoded(const google::protobuf::MessageLite& m) {
  const std::string bytes = m.SerializeAsString();
  return {bytes.begin(), bytes.end()};
}

std::vector<uint8_t> epoch_end(uint64_t n, uint64_t pages, uint64_t zeros) {
  v1::Epoch e;
  e.set_epoch(n);
  e.set_pages(pages);
  e.set_zero_pages(zeros);
  e.set_length_us(30000);
  return encoded(e);
}

std::vector<uint8_t> state() {
  state::v1::VmState s;
  s.set_schema_version(2);
  return encoded(s);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const StreamError& e) {
    return e.what();
  }
  return "";
}

struct Written {
  std::vector<std::vector<uint8_t>> frames;
  EpochAssembler::WriteNow writer() {
    return [this](std::span<const uint8_t> payload) {
      frames.emplace_back(payload.begin(), payload.end());
      return decode_page_batch(payload, 64, [](uint64_t, const uint8_t*) {});
    };
  }
  // Disk block frames: the disk's index first.
  EpochAssembler::WriteNow disk_writer() {
    return [this](std::span<const uint8_t> payload) {
      frames.emplace_back(payload.begin(), payload.end());
      return decode_page_batch(split_disk_blocks(payload, 2).batch, 16,
                               [](uint64_t, const uint8_t*) {});
    };
  }
};

TEST(EpochAssembler, FirstCopyAndFirstEpochGoStraightToMemoryLaterOnesWait) {
  EpochAssembler a(64);
  Written w;
  a.add_pages(batch({{0, 1}, {1, -1}}), w.writer());
  a.end_first_copy();
  a.add_pages(batch({{2, 2}}), w.writer());
  a.add_state(state());
  EXPECT_EQ(w.frames.size(), 2u);
  EpochAssembler::Epoch first = a.complete(epoch_end(1, 1, 0));
  EXPECT_EQ(first.number, 1u);
  EXPECT_TRUE(first.frames.empty());
  EXPECT_EQ(first.state.schema_version(), 2u);
  a.committed();
  EXPECT_EQ(a.last_epoch(), 1u);

  a.add_pages(batch({{3, 3}, {4, -1}}), w.writer());
  a.add_pages(batch({{5, 5}}), w.writer());
  EXPECT_EQ(w.frames.size(), 2u) << "a later epoch's pages wait for its end";
  EXPECT_TRUE(a.mid_epoch());
  a.add_state(state());
  EpochAssembler::Epoch second = a.complete(epoch_end(2, 2, 1));
  ASSERT_EQ(second.frames.size(), 2u);
  EXPECT_EQ(second.pages, 3u);
  EXPECT_EQ(second.frames[1].bytes, batch({{5, 5}}));
  EXPECT_EQ(second.frames[1].type, FrameType::kPages);
  a.committed();
  EXPECT_FALSE(a.mid_epoch());
  EXPECT_EQ(a.last_epoch(), 2u);
}

std::vector<uint8_t> disk_frame(uint64_t disk, std::vector<std::pair<uint64_t, int>> blocks) {
  std::vector<uint8_t> out(8);
  std::memcpy(out.data(), &disk, 8);
  const auto entries = batch(std::move(blocks));
  out.insert(out.end(), entries.begin(), entries.end());
  return out;
}

TEST(EpochAssembler, DiskBlocksTravelWithTheirEpoch) {
  // Disk 0 is not replicated (read-only); disk 1 has 16 blocks.
  EpochAssembler a(64, {0, 16});
  Written w;
  a.add_disk_blocks(disk_frame(1, {{0, 7}, {15, -1}}), w.disk_writer());
  EXPECT_EQ(w.frames.size(), 1u) << "the first copy is written at once";
  a.end_first_copy();
  a.add_state(state());
  a.complete(epoch_end(1, 0, 0));
  a.committed();
  a.add_disk_blocks(disk_frame(1, {{3, 9}}), w.disk_writer());
  EXPECT_EQ(w.frames.size(), 1u) << "a later epoch's blocks wait for its end";
  a.add_state(state());
  v1::Epoch e;
  e.set_epoch(2);
  EXPECT_EQ(error_of([&] { a.complete(encoded(e)); }),
            "migration stream: epoch 2 announced 0+0 disk blocks, 1+0 arrived");
  e.set_disk_blocks(1);
  EpochAssembler::Epoch second = a.complete(encoded(e));
  ASSERT_EQ(second.frames.size(), 1u);
  EXPECT_EQ(second.frames[0].type, FrameType::kDiskBlocks);
  EXPECT_EQ(second.disk_blocks, 1u);
  a.committed();
  EXPECT_EQ(error_of([&] {
              a.add_disk_blocks(disk_frame(0, {{0, 1}}), w.disk_writer());
            }),
            "migration stream: disk blocks for disk 0, not replicated");
  EXPECT_EQ(error_of([&] {
              a.add_disk_blocks(disk_frame(2, {{0, 1}}), w.disk_writer());
            }),
            "migration stream: disk blocks for disk 2 of 2");
  EXPECT_EQ(error_of([&] {
              a.add_disk_blocks(disk_frame(1, {{16, 1}}), w.disk_writer());
            }),
            "migration stream: page 16 beyond guest memory (16 pages)");
  EXPECT_EQ(error_of([&] {
              a.add_disk_blocks(std::vector<uint8_t>{1, 2, 3}, w.disk_writer());
            }),
            "migration stream: disk blocks frame without its disk");
}

TEST(EpochAssembler, KeepsAnEpochOfAtMostFourTimesMemory) {
  EpochAssembler a(2);  // two pages of memory: 32 KiB kept at most
  Written w;
  a.end_first_copy();
  a.add_state(state());
  a.complete(epoch_end(1, 0, 0));
  a.committed();
  for (int i = 0; i < 7; ++i) a.add_pages(batch({{1, i}}), w.writer());
  EXPECT_EQ(error_of([&] {
              a.add_pages(batch({{0, 9}}), w.writer());
            }),
            "migration stream: an epoch of more than 0 MiB (four times memory and the disks "
            "once)");
}

TEST(EpochAssembler, RefusesEpochsThatDoNotAddUp) {
  Written w;
  auto started = [&] {
    auto a = std::make_unique<EpochAssembler>(64);
    a->end_first_copy();
    a->add_pages(batch({{1, 1}}), w.writer());
    a->add_state(state());
    a->complete(epoch_end(1, 1, 0));
    a->committed();
    return a;
  };
  auto a = started();
  a->add_pages(batch({{2, 2}}), w.writer());
  a->add_state(state());
  EXPECT_EQ(error_of([&] { a->complete(epoch_end(3, 1, 0)); }),
            "migration stream: epoch 3 after epoch 1");
  EXPECT_EQ(error_of([&] { a->complete(epoch_end(2, 2, 0)); }),
            "migration stream: epoch 2 announced 2+0 pages, 1+0 arrived");
  EXPECT_EQ(error_of([&] { a->add_state(state()); }),
            "migration stream: a second state in one epoch");
  EXPECT_EQ(a->last_epoch(), 1u) << "nothing of a refused epoch is handed over";

  a = started();
  a->add_pages(batch({{2, 2}}), w.writer());
  EXPECT_EQ(error_of([&] { a->complete(epoch_end(2, 1, 0)); }),
            "migration stream: epoch 2 without a state");
  EXPECT_EQ(error_of([&] {
              a->add_pages(batch({{64, 1}}), w.writer());
            }),
            "migration stream: page 64 beyond guest memory (64 pages)");
  EXPECT_EQ(error_of([&] { a->end_first_copy(); }),
            "migration stream: sync after the first epoch began");
  EXPECT_EQ(error_of([&] {
              a->add_state(std::vector<uint8_t>{0xff, 0xff});
            }),
            "migration stream: state frame does not parse");
  EXPECT_EQ(error_of([&] { a->complete(std::vector<uint8_t>{0xff}); }),
            "migration stream: epoch frame does not parse");
}

}  // namespace
}  // namespace keel::migration
