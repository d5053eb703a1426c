// A terminal for tests that drive a program as a person would: a tmux
// server of the test's own (its socket named for this process), one session
// running a command in a 200x50 terminal, keys typed into it and its screen
// read back. The server is killed when the object goes.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "common/child_process.h"

namespace keel::testing {

class TmuxTerminal {
 public:
  explicit TmuxTerminal(const std::string& command);
  ~TmuxTerminal();
  TmuxTerminal(const TmuxTerminal&) = delete;
  TmuxTerminal& operator=(const TmuxTerminal&) = delete;

  // tmux key names ("Enter", "Up", "C-b") or literal words.
  void keys(const std::vector<std::string>& keys);
  // Typed literally, then Enter.
  void line(const std::string& text);
  // The file's bytes written into the terminal at once, as a paste.
  void paste(const std::string& file);
  // What the terminal shows, with its scroll-back.
  std::string screen();
  // The command ended (the pane stays, its last words readable).
  bool dead();
  // Until the screen shows `text` (true), `timeout` passed, or `ended`
  // says what drives the terminal ended (then one last look).
  bool wait_for(const std::string& text, std::chrono::milliseconds timeout,
                const std::function<bool()>& ended = {});

 private:
  CommandResult tmux(std::vector<std::string> args);
  std::string server_;
};

}  // namespace keel::testing
