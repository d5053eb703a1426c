// Guest memory to and from a snapshot's memory file (proto/memory_image.proto).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "proto/memory_image.pb.h"

namespace keel {

// Writes the pages of the memfd `fd` (mapped at `mapping`, `size` bytes)
// that hold data other than zeros into `path`, at their own offsets; holes
// in the memfd (never touched) are skipped without reading them. The file is
// made durable (fdatasync) before this returns. `file_name` is recorded as
// the image's file.
state::v1::MemoryImage write_memory_image(int fd, const uint8_t* mapping, uint64_t size,
                                          const std::string& path, const std::string& file_name);
// The same into `out_fd`, a new empty file (`path` names it in messages).
// With `cancel`: checked between extents (1 MiB at most), and when set the
// write stops with std::runtime_error (the file is left partial).
state::v1::MemoryImage write_memory_image(int fd, const uint8_t* mapping, uint64_t size, int out_fd,
                                          const std::string& path, const std::string& file_name,
                                          const std::atomic<bool>* cancel = nullptr);

// Fills `mapping` (`size` bytes, zeros on entry: a fresh memfd) from the
// image at `path`. The image is untrusted: its size, page size and extents
// must fit `size`, the file must be as long as it says, and every extent's
// checksum must match; otherwise InputError naming what is wrong, and
// `mapping` must be thrown away.
void read_memory_image(const state::v1::MemoryImage& image, const std::string& path,
                       uint8_t* mapping, uint64_t size);

}  // namespace keel
