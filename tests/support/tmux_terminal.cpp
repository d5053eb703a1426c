#include "tests/support/tmux_terminal.h"

#include <unistd.h>

#include <stdexcept>
#include <thread>

namespace keel::testing {

TmuxTerminal::TmuxTerminal(const std::string& command)
    : server_("keel-test-terminal-" + std::to_string(::getpid())) {
  auto r = tmux({"new-session", "-d", "-s", "console", "-x", "200", "-y", "50", command});
  if (r.exit_code != 0) throw std::runtime_error("tmux new-session: " + r.err);
  tmux({"set-option", "-t", "console", "remain-on-exit", "on"});
}

TmuxTerminal::~TmuxTerminal() {
  tmux({"kill-server"});
}

void TmuxTerminal::keys(const std::vector<std::string>& keys) {
  std::vector<std::string> args{"send-keys", "-t", "console"};
  args.insert(args.end(), keys.begin(), keys.end());
  auto r = tmux(args);
  if (r.exit_code != 0) throw std::runtime_error("tmux send-keys: " + r.err);
}

void TmuxTerminal::line(const std::string& text) {
  tmux({"send-keys", "-t", "console", "-l", text});
  keys({"Enter"});
}

void TmuxTerminal::paste(const std::string& file) {
  auto r = tmux({"load-buffer", "-b", "paste", file});
  if (r.exit_code != 0) throw std::runtime_error("tmux load-buffer: " + r.err);
  r = tmux({"paste-buffer", "-d", "-b", "paste", "-t", "console"});
  if (r.exit_code != 0) throw std::runtime_error("tmux paste-buffer: " + r.err);
}

std::string TmuxTerminal::screen() {
  return tmux({"capture-pane", "-p", "-J", "-S", "-3000", "-t", "console"}).out;
}

bool TmuxTerminal::dead() {
  auto r = tmux({"display-message", "-p", "-t", "console", "#{pane_dead}"});
  return r.out.rfind("1", 0) == 0;
}

bool TmuxTerminal::wait_for(const std::string& text, std::chrono::milliseconds timeout,
                            const std::function<bool()>& ended) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (screen().find(text) != std::string::npos) return true;
    if (ended && ended()) return screen().find(text) != std::string::npos;
    // tmux tells no "screen changed" to a client outside it: looked at again.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

CommandResult TmuxTerminal::tmux(std::vector<std::string> args) {
  args.insert(args.begin(), {"tmux", "-L", server_, "-f", "/dev/null"});
  return run_command(args, std::chrono::seconds(30));
}

}  // namespace keel::testing
