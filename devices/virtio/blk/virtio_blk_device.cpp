#include "devices/virtio/blk/virtio_blk_device.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <boost/asio/post.hpp>
#include <cstring>
#include <stdexcept>
#include <variant>

#include "common/error.h"
#include "common/log.h"
#include "common/state_check.h"
#include "proto/device_state.pb.h"
#include "storage/open_disk.h"

namespace keel::virtio {
namespace {

std::string serial_for(const std::string& path, std::string serial) {
  if (serial.size() > kBlkIdBytes) {
    throw InputError("disk serial \"" + serial + "\" is longer than " +
                     std::to_string(kBlkIdBytes) + " bytes");
  }
  return serial.empty() ? default_disk_serial(path) : serial;
}

int dup_fd(int fd) {
  const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) throw_errno("dup of the disk's completion eventfd");
  return copy;
}

}  // namespace

std::string default_disk_serial(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  name.resize(std::min<size_t>(name.size(), kBlkIdBytes));
  return name;
}

VirtioBlkDevice::VirtioBlkDevice(boost::asio::io_context& events,
                                 const state::v1::DiskConfig& config, bool claim)
    : VirtioBlkDevice(events, storage::open_disk(config, claim), config.serial()) {}

VirtioBlkDevice::VirtioBlkDevice(boost::asio::io_context& events,
                                 std::unique_ptr<storage::BlockBackend> disk, std::string serial)
    : disk_(std::move(disk)),
      serial_(serial_for(disk_->name(), std::move(serial))),
      capacity_sectors_(disk_->size() >> kSectorShift),
      // Asio owns (and closes) its descriptor: give it a copy of the eventfd.
      completions_(events, dup_fd(disk_->event_fd())) {
  disk_->set_completion_handler(
      [this](uint64_t t, int64_t result) { on_disk_completion(t, result); });
  wait_for_completions();
}

VirtioBlkDevice::~VirtioBlkDevice() {
  alive_.reset();
  boost::system::error_code ignored;
  completions_.close(ignored);
  // disk_ goes last: its destructor waits for requests still in the kernel.
}

uint64_t VirtioBlkDevice::device_features() const {
  uint64_t features = kBlkFSizeMax | kBlkFSegMax | kBlkFBlkSize | kBlkFFlush | kBlkFTopology;
  // 5.2.3: RO; a read-only disk offers nothing that writes.
  features |= disk_->read_only() ? kBlkFRo : (kBlkFDiscard | kBlkFWriteZeroes);
  return features;
}

BlkConfig VirtioBlkDevice::config() const {
  BlkConfig c{};
  c.capacity = capacity_sectors_;
  // Without indirect descriptors a chain must fit the ring, and needs two
  // more descriptors for the header and the status.
  c.seg_max = kQueueSize - 2;
  c.size_max = kSizeMax;
  c.blk_size = kSectorSize;
  // Topology: the granularity O_DIRECT wants, so that the guest's own
  // alignment keeps its requests on the direct path.
  const uint32_t physical = std::clamp<uint32_t>(disk_->preferred_alignment(), kSectorSize, 4096);
  c.physical_block_exp =
      static_cast<uint8_t>(std::countr_zero(std::bit_floor(physical) >> kSectorShift));
  c.min_io_size = static_cast<uint16_t>(std::bit_floor(physical) >> kSectorShift);
  c.num_queues = 1;
  if (!disk_->read_only()) {
    c.max_discard_sectors = kMaxRangeSectors;
    c.max_discard_seg = kMaxRangeSegments;
    // The file system's block: smaller holes are zeroed, not deallocated.
    c.discard_sector_alignment =
        std::max<uint32_t>(std::bit_floor(disk_->discard_granularity()) >> kSectorShift, 1);
    c.max_write_zeroes_sectors = kMaxRangeSectors;
    c.max_write_zeroes_seg = kMaxRangeSegments;
    c.write_zeroes_may_unmap = 1;
  }
  return c;
}

void VirtioBlkDevice::config_read(uint32_t offset, std::span<uint8_t> data) {
  // The transport checked offset + size against config_size(). Little-endian
  // like the x86 hosts Keel runs on.
  const BlkConfig c = config();
  std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(&c) + offset, data.size());
}

void VirtioBlkDevice::config_write(uint32_t, std::span<const uint8_t>) {
  // 5.2.4: only `writeback` is writable, and only with CONFIG_WCE (not offered).
}

void VirtioBlkDevice::activate(GuestMemory& memory, std::vector<std::optional<SplitQueue>> queues,
                               uint64_t features) {
  memory_ = &memory;
  queue_.reset();
  if (!queues.empty() && queues[0]) queue_.emplace(std::move(*queues[0]));
  queue_broken_ = false;
  pushed_ = false;
  info_ = BlkDeviceInfo{
      .capacity_sectors = capacity_sectors_,
      .read_only = disk_->read_only(),
      .discard = (features & kBlkFDiscard) != 0,
      .write_zeroes = (features & kBlkFWriteZeroes) != 0,
      .max_discard_sectors = kMaxRangeSectors,
      .max_discard_seg = kMaxRangeSegments,
      .max_write_zeroes_sectors = kMaxRangeSectors,
      .max_write_zeroes_seg = kMaxRangeSegments,
      .seg_max = kQueueSize - 2,
      .size_max = kSizeMax,
  };
  in_flight_.assign(queue_ ? queue_->config().size : 0, InFlight{});
  in_flight_count_ = 0;
  in_flight_bytes_ = 0;
}

void VirtioBlkDevice::reset() {
  // Never waits here (on a vCPU thread, holding the function's lock that the
  // event loop needs): the kernel finishes what it has, the completions are
  // dropped, and the transport reports the reset done after the last one.
  if (disk_->outstanding() > 0) disk_->abandon_all();
  // A read dropped here may have landed in part: its buffers count as
  // written now, and again when the kernel is done with them.
  const bool draining = disk_->outstanding() > 0;
  for (InFlight& r : in_flight_) {
    if (!r.active) continue;
    if (draining) draining_.insert(draining_.end(), r.landing.begin(), r.landing.end());
    mark_landed(r);
  }
  if (draining && !draining_.empty()) draining_memory_ = memory_;
  ++generation_;
  queue_.reset();
  memory_ = nullptr;
  queue_broken_ = false;
  pushed_ = false;
  continuation_posted_ = false;
  quiesced_ = false;
  resume_pending_ = false;
  in_flight_.clear();
  in_flight_count_ = 0;
  in_flight_bytes_ = 0;
}

void VirtioBlkDevice::queue_notify(uint16_t queue) {
  if (queue == 0) process_queue();
}

void VirtioBlkDevice::process_queue() {
  if (!queue_ || queue_broken_) return;
  if (quiesced_) {
    // A round left for later (continue_later) after the state was taken:
    // it would change guest memory under the snapshot. It runs at resume.
    resume_pending_ = true;
    return;
  }
  try {
    // 2.7.10: no kicks while draining (SplitQueue::next_chain).
    queue_->disable_notification();
    for (unsigned budget = kBurst; !queue_broken_; --budget) {
      if (budget == 0) {
        // Notifications stay off: the next round re-enables them.
        continue_later();
        break;
      }
      if (in_flight_bytes_ >= kMaxBytesInFlight) {
        // The rest waits in the ring; the completion that brings the bytes
        // below the limit takes up the queue again (notifications stay off).
        break;
      }
      std::optional<DescriptorChain> chain = queue_->next_chain();
      if (!chain) break;
      handle_chain(*chain);
    }
  } catch (const VirtqueueError& e) {
    queue_failed(std::string("queue: ") + e.what());
  }
  // What was accepted before any failure still goes out (and reset() waits
  // for it).
  disk_->submit();
  notify_if_needed();
}

void VirtioBlkDevice::handle_chain(const DescriptorChain& chain) {
  const uint16_t head = chain.head;
  if (head >= in_flight_.size() || in_flight_[head].active) {
    // A head already in flight made available again: the driver broke the
    // queue's contract (2.7.13).
    queue_failed("queue: head " + std::to_string(head) + " made available while in flight");
    return;
  }
  const BlkParseResult parsed = parse_blk_request(chain, *memory_, info_);
  if (const auto* rejection = std::get_if<BlkRequestRejection>(&parsed)) {
    if (rejection->status_gpa) {
      complete(head, *rejection->status_gpa, rejection->status, 1);
    } else {
      return_chain(head, 0);  // nowhere to put a status
    }
    return;
  }
  start_request(head, std::get<BlkRequest>(parsed));
}

void VirtioBlkDevice::start_request(uint16_t head, const BlkRequest& request) {
  InFlight& r = in_flight_[head];
  ++counts_.ops[static_cast<size_t>(request.type)];
  r = InFlight{
      .active = true,
      .taken = std::chrono::steady_clock::now(),
      .is_read = request.type == BlkRequestType::kIn,
      .transfers = request.type == BlkRequestType::kIn || request.type == BlkRequestType::kOut,
      .status = kBlkSOk,
      .status_gpa = request.status_gpa,
      .data_len = request.data_len,
      .ops_left = 0,
      .landing = {},
      .write_offset = 0,
      .write_length = 0,
      .ranges = {}};
  auto finish_now = [&](uint8_t status, uint32_t written_len) {
    r.active = false;
    complete(head, request.status_gpa, status, written_len);
  };

  switch (request.type) {
    case BlkRequestType::kGetId:
      answer_get_id(request);
      return finish_now(kBlkSOk, std::min(request.data_len, kBlkIdBytes) + 1);
    case BlkRequestType::kFlush:
      if (disk_->read_only()) return finish_now(kBlkSOk, 1);  // nothing was written
      r.ops_left = 1;
      disk_->flush(tag(head));
      break;
    case BlkRequestType::kIn:
    case BlkRequestType::kOut: {
      if (request.data_len == 0) return finish_now(kBlkSOk, 1);
      std::vector<iovec> iov;
      iov.reserve(request.data.size());
      try {
        for (const BlkDataSegment& seg : request.data) {
          // A read's data lands at its completion, which marks it dirty.
          void* base = r.is_read ? static_cast<void*>(memory_->host_range_for_io(seg.gpa, seg.len))
                                 : const_cast<uint8_t*>(memory_->host_range(seg.gpa, seg.len));
          iov.push_back({base, seg.len});
        }
      } catch (const std::out_of_range&) {
        return finish_now(kBlkSIoErr, 1);
      }
      r.ops_left = 1;
      in_flight_bytes_ += request.data_len;
      if (r.is_read) r.landing = request.data;
      const uint64_t offset = request.sector << kSectorShift;
      if (r.is_read) {
        disk_->read(tag(head), offset, iov);
      } else {
        note_written(offset, request.data_len);
        r.write_offset = offset;
        r.write_length = request.data_len;
        disk_->write(tag(head), offset, iov);
      }
      break;
    }
    case BlkRequestType::kDiscard:
    case BlkRequestType::kWriteZeroes: {
      for (const BlkRange& range : request.ranges) {
        if (range.num_sectors == 0) continue;
        ++r.ops_left;
        const uint64_t offset = range.sector << kSectorShift;
        const uint64_t length = uint64_t{range.num_sectors} << kSectorShift;
        note_written(offset, length);
        r.ranges.emplace_back(offset, length);
        if (request.type == BlkRequestType::kDiscard) {
          disk_->discard(tag(head), offset, length);
        } else {
          disk_->write_zeroes(tag(head), offset, length, range.unmap);
        }
      }
      if (r.ops_left == 0) return finish_now(kBlkSOk, 1);
      break;
    }
  }
  ++in_flight_count_;
}

void VirtioBlkDevice::track_writes(bool on) {
  if (!on) {
    written_.reset();
  } else if (!written_) {
    written_ = std::make_unique<DirtyBitmap>(disk_->size());
  }
}

std::vector<uint64_t> VirtioBlkDevice::harvest_writes() {
  return written_ ? written_->harvest() : std::vector<uint64_t>{};
}

// A range the backend will refuse (past the end) is noted only as far as
// the disk goes: nothing beyond it can change.
void VirtioBlkDevice::note_written(uint64_t offset, uint64_t length) {
  if (!written_ || offset >= disk_->size() || length == 0) return;
  written_->mark(offset, std::min(length, disk_->size() - offset));
}

void VirtioBlkDevice::answer_get_id(const BlkRequest& request) {
  // 5.2.6: up to 20 bytes, NUL-padded when the serial is shorter.
  uint8_t id[kBlkIdBytes] = {};
  std::memcpy(id, serial_.data(), std::min<size_t>(serial_.size(), kBlkIdBytes));
  uint32_t done = 0;
  for (const BlkDataSegment& seg : request.data) {
    if (done == kBlkIdBytes) break;
    const uint32_t n = std::min(seg.len, kBlkIdBytes - done);
    memory_->write(seg.gpa, {id + done, n});
    done += n;
  }
}

void VirtioBlkDevice::on_disk_completion(uint64_t t, int64_t result) {
  const auto head = static_cast<uint16_t>(t & 0xffff);
  if ((t >> 16) != generation_ || head >= in_flight_.size() || !in_flight_[head].active) return;
  InFlight& r = in_flight_[head];
  mark_landed(r);
  note_written(r.write_offset, r.write_length);
  for (const auto& [offset, length] : r.ranges) note_written(offset, length);
  const bool was_full = in_flight_bytes_ >= kMaxBytesInFlight;
  // Reads and writes must move every byte: fewer means the image ended
  // early (it shrank under us).
  const bool failed = result < 0 || (r.transfers && static_cast<uint64_t>(result) != r.data_len);
  if (failed) {
    // Told once per request (a discard's ranges may each fail).
    if (r.status == kBlkSOk && transport_ != nullptr) {
      transport_->io_error(std::string(r.is_read     ? "read"
                                       : r.transfers ? "write"
                                                     : "request") +
                           " of " + std::to_string(r.data_len) + " bytes failed: " +
                           (result < 0 ? std::strerror(static_cast<int>(-result))
                                       : "short transfer (" + std::to_string(result) + " bytes)"));
    }
    r.status = kBlkSIoErr;
  }
  if (--r.ops_left > 0) return;
  r.active = false;
  --in_flight_count_;
  latency_.record(std::chrono::steady_clock::now() - r.taken);
  if (r.transfers) in_flight_bytes_ -= r.data_len;
  if (was_full && in_flight_bytes_ < kMaxBytesInFlight) continue_later();
  if (r.transfers && r.status == kBlkSOk)
    (r.is_read ? counts_.read_bytes : counts_.written_bytes) += r.data_len;
  const uint32_t written = (r.is_read && r.status == kBlkSOk) ? r.data_len + 1 : 1;
  complete(head, r.status_gpa, r.status, written);
}

void VirtioBlkDevice::mark_landed(InFlight& r) {
  // The data is in place before its pages are marked (common/dirty_bitmap.h).
  for (const BlkDataSegment& seg : r.landing) memory_->mark_dirty(seg.gpa, seg.len);
  r.landing.clear();
}

void VirtioBlkDevice::end_draining() {
  if (draining_.empty() || disk_->outstanding() > 0) return;
  for (const BlkDataSegment& seg : draining_) draining_memory_->mark_dirty(seg.gpa, seg.len);
  draining_.clear();
  draining_memory_ = nullptr;
}

VirtioDevice::Counters VirtioBlkDevice::counters() const {
  Counters counters{{"requests", counts_.requests},
                    {"read_bytes", counts_.read_bytes},
                    {"written_bytes", counts_.written_bytes},
                    {"errors", counts_.errors},
                    {"in_flight", in_flight_count_}};
  const char* const kinds[] = {"read_ops",   "write_ops",   "flush_ops",
                               "get_id_ops", "discard_ops", "write_zeroes_ops"};
  static_assert(std::size(kinds) == std::tuple_size_v<decltype(counts_.ops)>);
  for (size_t i = 0; i < std::size(kinds); ++i) counters.emplace_back(kinds[i], counts_.ops[i]);
  for (auto& counter : disk_->counters()) counters.push_back(std::move(counter));
  return counters;
}

void VirtioBlkDevice::complete(uint16_t head, uint64_t status_gpa, uint8_t status,
                               uint32_t written_len) {
  ++counts_.requests;
  if (status != kBlkSOk) ++counts_.errors;
  if (!queue_ || queue_broken_) return;
  memory_->write_obj<uint8_t>(status_gpa, status);
  return_chain(head, written_len);
}

void VirtioBlkDevice::return_chain(uint16_t head, uint32_t written_len) {
  if (!queue_ || queue_broken_) return;
  try {
    queue_->push_used(head, written_len);
    pushed_ = true;
  } catch (const VirtqueueError& e) {
    queue_failed(std::string("queue: ") + e.what());
  }
}

void VirtioBlkDevice::notify_if_needed() {
  if (!pushed_ || !queue_ || queue_broken_) return;
  pushed_ = false;
  try {
    if (queue_->should_notify()) transport_->queue_interrupt(0);
  } catch (const VirtqueueError& e) {
    queue_failed(std::string("queue: ") + e.what());
  }
}

void VirtioBlkDevice::queue_failed(const std::string& why) {
  // 2.1.2: stop using the queue; requests in flight finish in the disk and
  // are dropped, and reset() waits for them.
  if (queue_broken_) return;
  queue_broken_ = true;
  transport_->needs_reset("virtio-blk: " + why);
}

void VirtioBlkDevice::continue_later() {
  if (continuation_posted_) return;
  continuation_posted_ = true;
  boost::asio::post(completions_.get_executor(),
                    [this, alive = std::weak_ptr<char>(alive_), generation = generation_] {
                      if (alive.expired()) return;
                      std::lock_guard lock(transport_->lock());
                      // A reset since: the queue it was for is gone.
                      if (generation != generation_) return;
                      continuation_posted_ = false;
                      process_queue();
                    });
}

void VirtioBlkDevice::wait_for_completions() {
  completions_.async_wait(
      boost::asio::posix::stream_descriptor::wait_read,
      [this, alive = std::weak_ptr<char>(alive_)](const boost::system::error_code& ec) {
        if (ec || alive.expired()) return;
        {
          std::lock_guard lock(transport_->lock());
          try {
            disk_->process_completions();
            end_draining();
            notify_if_needed();
          } catch (const std::exception& e) {
            // Host-side (io_uring, KVM): this disk stops,
            // the event loop and the VM go on.
            log::error(std::string("virtio-blk ") + disk_->name() + ": " + e.what());
            queue_failed(std::string("host failure: ") + e.what());
          }
        }
        wait_for_completions();
      });
}

// --- snapshot -------------------------------------------------------------

void VirtioBlkDevice::quiesce() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kResetWaitMs);
  // disk_->outstanding() counts a pending reset's abandoned requests too:
  // they may still write guest memory, so they must be done before a save.
  while (in_flight_count_ > 0 || disk_->outstanding() > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      throw std::runtime_error("virtio-blk: " + std::to_string(disk_->outstanding()) +
                               " requests still in flight after " + std::to_string(kResetWaitMs) +
                               " ms");
    }
    pollfd p{disk_->event_fd(), POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) throw_errno("poll on the disk's completion eventfd");
    // Completes requests through on_disk_completion: status bytes and used
    // entries are written as on the event loop.
    disk_->process_completions();
  }
  end_draining();
  notify_if_needed();
  quiesced_ = true;
}

void VirtioBlkDevice::resume() {
  quiesced_ = false;
  if (resume_pending_) {
    resume_pending_ = false;
    process_queue();
  }
}

std::optional<SplitQueueState> VirtioBlkDevice::queue_state(uint16_t queue) const {
  if (queue != 0 || !queue_ || queue_broken_) return std::nullopt;
  if (in_flight_count_ != 0)
    throw std::logic_error("virtio-blk: queue state taken with requests in flight");
  return queue_->state();
}

void VirtioBlkDevice::save_state(state::v1::VirtioDeviceState& state) const {
  if (in_flight_count_ != 0) {
    throw std::logic_error("virtio-blk: " + std::to_string(in_flight_count_) +
                           " requests in flight: quiesce before saving");
  }
  state.Clear();
  state.mutable_blk()->set_capacity_sectors(capacity_sectors_);
  state.mutable_blk()->set_read_only(disk_->read_only());
}

void VirtioBlkDevice::restore_state(const state::v1::VirtioDeviceState& state) {
  if (!state.has_blk()) refuse_state("virtio-blk", "device", "holds no virtio-blk state");
  if (state.blk().capacity_sectors() != capacity_sectors_) {
    refuse_state("virtio-blk", "capacity_sectors",
                 std::to_string(state.blk().capacity_sectors()) + " differs from the disk's " +
                     std::to_string(capacity_sectors_) + " (" + disk_->name() + ")");
  }
  if (state.blk().read_only() != disk_->read_only()) {
    refuse_state("virtio-blk", "read_only", "differs from the disk's");
  }
}

}  // namespace keel::virtio
