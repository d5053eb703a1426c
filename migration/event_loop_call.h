// A task run on the machine's event loop from a migration's or replica's
// own thread, its result or exception carried back. A loop that does not
// get to it within 10 s (the machine is stopping) fails the caller.
#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "vmm/migratable_machine.h"

namespace keel::migration {

template <typename T>
T from_event_loop(std::future<T>& future) {
  if (future.wait_for(std::chrono::seconds(10)) != std::future_status::ready)
    throw std::runtime_error("the machine's event loop did not answer within 10 s");
  return future.get();
}

// The task either never runs (not begun within 10 s: the caller gets an
// error and the task, when the loop gets to it, does nothing) or is waited
// for to its end, however long that takes: a task may hold references to
// the caller's state, which must outlive it.
template <typename T>
T on_event_loop(MigratableMachine& machine, std::function<T()> task) {
  struct Shared {
    std::mutex mutex;
    bool begun = false;
    bool given_up = false;
    std::promise<T> result;
  };
  auto shared = std::make_shared<Shared>();
  auto future = shared->result.get_future();
  machine.post([shared, task = std::move(task)] {
    {
      std::lock_guard guard(shared->mutex);
      if (shared->given_up) return;
      shared->begun = true;
    }
    try {
      shared->result.set_value(task());
    } catch (...) {
      shared->result.set_exception(std::current_exception());
    }
  });
  if (future.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    std::lock_guard guard(shared->mutex);
    if (!shared->begun) {
      shared->given_up = true;
      throw std::runtime_error("the machine's event loop did not answer within 10 s");
    }
  }
  return future.get();
}

}  // namespace keel::migration
