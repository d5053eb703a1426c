// virtio-blk (virtio 1.x, 5.2): one request queue over a disk backend: a
// raw image read and written through io_uring (storage::RawDisk) or an NBD
// export (storage::NbdDisk).
//
// Requests never block the caller: queue_notify() parses what the driver made
// available (parse_blk_request) and submits it; reads land directly in the
// guest's buffers. Completions arrive on the machine's event loop (the disk's
// eventfd, waited for with Boost.Asio), which takes the transport's lock,
// writes each status byte, returns the chains through the used ring and
// interrupts the driver when it asked for it. A write is completed to the
// guest only after io_uring completed it, a flush only after fdatasync did.
//
// Threading: queue_notify, activate, reset and the configuration calls come
// with VirtioTransport::lock() held (VirtioDevice); the completion handler
// takes it. Destroy the device on the event loop's thread or after the loop
// has stopped.
#pragma once

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/dirty_bitmap.h"
#include "common/latency_histogram.h"
#include "devices/virtio/blk/blk_request.h"
#include "devices/virtio/queue/virtio_device.h"
#include "proto/vm_config.pb.h"
#include "storage/block_backend.h"

namespace keel::virtio {

// GET_ID's answer when the configuration names no serial: the image's
// file name, its first 20 bytes (kBlkIdBytes).
std::string default_disk_serial(const std::string& path);

class VirtioBlkDevice : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  // Ranges per discard / write-zeroes request, and sectors per range.
  static constexpr uint32_t kMaxRangeSegments = 32;
  static constexpr uint32_t kMaxRangeSectors = uint32_t{1} << 22;  // 2 GiB
  // How long quiesce() waits for requests in flight.
  static constexpr int kResetWaitMs = 10000;
  // 5.2.4 size_max: the largest data segment a request may have (with
  // seg_max segments, at most 254 MiB per request).
  static constexpr uint32_t kSizeMax = 1 << 20;
  // Data bytes in flight beyond which no further chain is taken from the
  // ring until completions bring it below: bounds what the kernel holds of
  // one disk, and so what a reset leaves it to finish.
  static constexpr uint64_t kMaxBytesInFlight = 64 << 20;
  // Chains taken per round. A driver that makes chains available as fast as
  // the device returns them (requests answered at once: GET_ID, rejected
  // ones) would otherwise keep one kick, and the lock, forever; the rest
  // goes on in a later round on the event loop.
  static constexpr unsigned kBurst = 64;

  // Opens the image or export (throws InputError naming it when that
  // fails). An empty serial: the image's file name, or the export's name
  // (its first 20 bytes). `claim`: take the disk at once
  // (storage::BlockBackend::claim).
  VirtioBlkDevice(boost::asio::io_context& events, const state::v1::DiskConfig& config,
                  bool claim = true);
  // Over a disk already open; `serial` as in DiskConfig.
  VirtioBlkDevice(boost::asio::io_context& events, std::unique_ptr<storage::BlockBackend> disk,
                  std::string serial);
  ~VirtioBlkDevice() override;

  uint16_t device_type() const override { return kDeviceTypeBlock; }
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return 1; }
  uint16_t max_queue_size() const override { return kQueueSize; }
  uint32_t config_size() const override { return kBlkConfigSize; }
  void config_read(uint32_t offset, std::span<uint8_t> data) override;
  void config_write(uint32_t offset, std::span<const uint8_t> data) override;
  void activate(GuestMemory& memory, std::vector<std::optional<SplitQueue>> queues,
                uint64_t features) override;
  // Abandons the requests in flight without waiting for them: their
  // completions are dropped as they come; reset_pending() until the last.
  void reset() override;
  bool reset_pending() const override { return disk_->outstanding() > 0; }
  void queue_notify(uint16_t queue) override;

  // Snapshot. quiesce() (lock held) waits, at most kResetWaitMs, for every
  // request in flight (a reset's abandoned ones too) to complete and its
  // used entry to be written,
  // collecting the disk's completions itself (the event loop may be blocked
  // on the lock meanwhile); throws std::runtime_error if some remain.
  // save_state() refuses (std::logic_error) with requests in flight. The
  // state is the disk's capacity and read-only flag: the configuration is
  // derived from the disk, and restore_state() refuses another size.
  void quiesce() override;
  void resume() override;
  void sync_storage() override { disk_->sync(); }
  void release_storage() override { disk_->release(); }
  void claim_storage() override { disk_->claim(); }
  void track_writes(bool on) override;
  std::vector<uint64_t> harvest_writes() override;
  std::optional<SplitQueueState> queue_state(uint16_t queue) const override;
  void save_state(state::v1::VirtioDeviceState& state) const override;
  void restore_state(const state::v1::VirtioDeviceState& state) override;

  uint64_t capacity_sectors() const { return capacity_sectors_; }
  const std::string& serial() const { return serial_; }
  const storage::BlockBackend& disk() const { return *disk_; }
  // Requests popped and not yet returned to the driver.
  size_t requests_in_flight() const { return in_flight_count_; }
  // requests (completed), read_bytes, written_bytes, errors (IOERR or
  // UNSUPP answers), requests taken by kind (read_ops, write_ops,
  // flush_ops, discard_ops, write_zeroes_ops, get_id_ops), in_flight (now),
  // and the disk's own (direct/buffered submissions, resubmissions, waits
  // for ring space).
  Counters counters() const override;
  // From taking a request to its completion by the disk (requests answered
  // at once, GET_ID or refused ones, are not in it).
  const LatencyHistogram* request_latency() const override { return &latency_; }

 private:
  struct InFlight {
    bool active = false;
    std::chrono::steady_clock::time_point taken;
    bool is_read = false;
    bool transfers = false;  // IN or OUT: the result is a byte count
    uint8_t status = kBlkSOk;
    uint64_t status_gpa = 0;
    uint32_t data_len = 0;
    uint32_t ops_left = 0;  // disk requests not yet completed
    // A read's buffers: marked dirty when the data has landed (completion),
    // or when the request is dropped by a reset (it may have landed).
    std::vector<BlkDataSegment> landing;
    // What a write covers, and a discard's or write-zeroes' ranges (offset,
    // length): noted again at completion for replication (track_writes),
    // so a request in flight when tracking began is not missed.
    uint64_t write_offset = 0;
    uint64_t write_length = 0;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
  };

  BlkConfig config() const;
  void process_queue();
  void handle_chain(const DescriptorChain& chain);
  void start_request(uint16_t head, const BlkRequest& request);
  void answer_get_id(const BlkRequest& request);
  void note_written(uint64_t offset, uint64_t length);
  void mark_landed(InFlight& r);
  void end_draining();
  void on_disk_completion(uint64_t tag, int64_t result);
  void complete(uint16_t head, uint64_t status_gpa, uint8_t status, uint32_t written_len);
  void return_chain(uint16_t head, uint32_t written_len);
  void notify_if_needed();
  void queue_failed(const std::string& why);
  void wait_for_completions();
  void continue_later();
  uint64_t tag(uint16_t head) const { return (uint64_t{generation_} << 16) | head; }

  std::unique_ptr<DirtyBitmap> written_;  // track_writes: blocks written since the last harvest
  std::unique_ptr<storage::BlockBackend> disk_;
  std::string serial_;
  uint64_t capacity_sectors_ = 0;
  boost::asio::posix::stream_descriptor completions_;
  std::shared_ptr<char> alive_ = std::make_shared<char>();

  GuestMemory* memory_ = nullptr;
  std::optional<SplitQueue> queue_;
  bool queue_broken_ = false;
  bool pushed_ = false;               // used entries added since the last should_notify()
  bool continuation_posted_ = false;  // a later round of process_queue is queued
  bool quiesced_ = false;             // quiesce() until resume(): no chain is taken
  bool resume_pending_ = false;       // a round refused while quiesced
  BlkDeviceInfo info_;
  uint32_t generation_ = 0;  // bumped by reset: stale completions are ignored
  struct {
    uint64_t requests = 0, read_bytes = 0, written_bytes = 0, errors = 0;
    std::array<uint64_t, 6> ops{};  // by BlkRequestType
  } counts_;
  LatencyHistogram latency_;
  std::vector<InFlight> in_flight_;  // by head descriptor
  size_t in_flight_count_ = 0;
  uint64_t in_flight_bytes_ = 0;  // data bytes of the requests in flight
  // The buffers of reads a reset abandoned while the kernel still had them:
  // marked dirty again once the last abandoned request is done (the data may
  // land after the reset). Bounded by one queue's worth: no new activation
  // while a reset is pending.
  std::vector<BlkDataSegment> draining_;
  GuestMemory* draining_memory_ = nullptr;
};

}  // namespace keel::virtio
