// A task run on the machine's event loop from a migration's or replica's
// own thread, its result or exception carried back. A loop that does not
// get to it within 10 s (the machine is stopping) fails the caller; the task
// posted holds nothing of the caller's then.
#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <stdexcept>

#include "vmm/migratable_machine.h"

namespace keel::migration {

template <typename T>
T from_event_loop(std::future<T>& future) {
  if (future.wait_for(std::chrono::seconds(10)) != std::future_status::ready)
    throw std::runtime_error("the machine's event loop did not answer within 10 s");
  return future.get();
}

template <typename T>
T on_event_loop(MigratableMachine& machine, std::function<T()> task) {
  auto promise = std::make_shared<std::promise<T>>();
  auto future = promise->get_future();
  machine.post([promise, task = std::move(task)] {
    try {
      promise->set_value(task());
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  });
  return from_event_loop(future);
}

}  // namespace keel::migration
