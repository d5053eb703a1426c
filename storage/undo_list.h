// What an operation made, undone in reverse order unless it completed: a
// failed import or create leaves nothing behind.
#pragma once

#include <functional>
#include <utility>
#include <vector>

namespace keel::storage {

class UndoList {
 public:
  UndoList() = default;
  UndoList(const UndoList&) = delete;
  UndoList& operator=(const UndoList&) = delete;
  ~UndoList() {
    if (kept_) return;
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
      try {
        (*it)();
      } catch (...) {  // undoing what it can; the operation's own error is reported
      }
    }
  }
  void add(std::function<void()> step) { steps_.push_back(std::move(step)); }
  void keep() { kept_ = true; }

 private:
  std::vector<std::function<void()>> steps_;
  bool kept_ = false;
};

}  // namespace keel::storage
