// libFuzzer target: the live-migration stream as a receiver reads it
// (migration/stream). The input is the bytes a source sends: they go down
// a socket pair to a FrameChannel, which checks the magic and reads frames
// until the stream ends or is refused; each frame is decoded as the
// receiver would: page batches into a small guest memory (every index
// checked against it), hello and totals parsed, a hello's configuration
// checked and given this side's disks and taps (config_for_restore), a
// state parsed. Anything wrong must be a StreamError or an InputError;
// never a crash, a write outside memory, or a hang.
//
// Seeds (tests/fuzz/corpus/migration_stream_fuzz, make_seeds.py): streams
// with a hello, page batches with data and zero pages, totals, sync.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "common/error.h"
#include "migration/stream/frame_channel.h"
#include "proto/migration.pb.h"
#include "proto/vm_state.pb.h"
#include "tests/fuzz/fuzz_memory.h"
#include "tests/fuzz/fuzz_stream.h"
#include "vmm/config/vmm_options.h"

using namespace keel;
using namespace keel::migration;

namespace {
constexpr uint64_t kMemoryPages = 64;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<FrameChannel> stream = fuzz::stream_of(data, size);
  if (!stream) return 0;
  FrameChannel& channel = *stream;

  std::vector<uint8_t> memory(kMemoryPages * kPageSize);
  VmmOptions here;
  here.incoming = "tcp:127.0.0.1:0";
  try {
    channel.expect_magic();
    for (;;) {
      FrameChannel::Frame frame = channel.receive();
      switch (frame.type) {
        case FrameType::kPages:
          decode_page_batch(frame.payload, kMemoryPages, [&](uint64_t page, const uint8_t* bytes) {
            FUZZ_CHECK(page < kMemoryPages);
            if (bytes == nullptr) {
              std::memset(memory.data() + page * kPageSize, 0, kPageSize);
            } else {
              FUZZ_CHECK(bytes >= frame.payload.data() &&
                         bytes + kPageSize <= frame.payload.data() + frame.payload.size());
              std::memcpy(memory.data() + page * kPageSize, bytes, kPageSize);
            }
          });
          break;
        case FrameType::kHello: {
          migration::v1::Hello hello;
          if (!hello.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size())))
            break;
          // This side names as many disks and taps as the hello has.
          here.config.clear_disks();
          here.config.clear_nets();
          for (int i = 0; i < hello.config().disks_size() && i < 32; ++i)
            here.config.add_disks()->set_path("/var/lib/keel/disk" + std::to_string(i));
          for (int i = 0; i < hello.config().nets_size() && i < 32; ++i)
            here.config.add_nets()->set_tap("tap" + std::to_string(i));
          const state::v1::VmConfig config =
              config_for_restore(here, hello.config(), "migrating VM");
          FUZZ_CHECK(config.disks_size() == hello.config().disks_size());
          for (int i = 0; i < config.disks_size(); ++i)
            FUZZ_CHECK(config.disks(i).path() == here.config.disks(i).path());
          break;
        }
        case FrameType::kTotals: {
          migration::v1::Totals totals;
          totals.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()));
          break;
        }
        case FrameType::kState: {
          state::v1::VmState state;
          state.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()));
          break;
        }
        default:
          break;
      }
    }
  } catch (const InputError&) {
    // StreamError is one: the stream refused, as it must be.
  }
  return 0;
}
