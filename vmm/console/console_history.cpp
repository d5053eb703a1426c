#include "vmm/console/console_history.h"

#include <algorithm>
#include <stdexcept>

namespace keel {

ConsoleHistory::ConsoleHistory(size_t capacity) : ring_(capacity) {
  if (capacity == 0) throw std::invalid_argument("console history of 0 bytes");
}

void ConsoleHistory::append(std::span<const uint8_t> bytes) {
  const size_t cap = ring_.size();
  if (bytes.size() > cap) {  // only the newest fit
    end_ += bytes.size() - cap;
    bytes = bytes.subspan(bytes.size() - cap);
  }
  size_t at = static_cast<size_t>(end_ % cap);
  size_t first = std::min(bytes.size(), cap - at);
  std::copy_n(bytes.begin(), first, ring_.begin() + static_cast<ptrdiff_t>(at));
  std::copy(bytes.begin() + static_cast<ptrdiff_t>(first), bytes.end(), ring_.begin());
  end_ += bytes.size();
  size_ = std::min(cap, size_ + bytes.size());
}

uint64_t ConsoleHistory::read(uint64_t offset, size_t max, std::string& out) const {
  offset = std::clamp(offset, start(), end_);
  const size_t cap = ring_.size();
  size_t n = static_cast<size_t>(std::min<uint64_t>(max, end_ - offset));
  size_t at = static_cast<size_t>(offset % cap);
  size_t first = std::min(n, cap - at);
  out.append(reinterpret_cast<const char*>(ring_.data()) + at, first);
  out.append(reinterpret_cast<const char*>(ring_.data()), n - first);
  return offset;
}

std::string ConsoleHistory::contents() const {
  std::string out;
  read(start(), size_, out);
  return out;
}

void ConsoleHistory::assign(uint64_t end, std::span<const uint8_t> bytes) {
  if (end < bytes.size()) throw std::invalid_argument("console history ends before its bytes");
  end_ = end - bytes.size();
  size_ = 0;
  append(bytes);
}

}  // namespace keel
