#include "tools/keelctl/console_command.h"

#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>

#include "cluster/agent_client.h"
#include "control/console_connection.h"
#include "tools/keelctl/agent_console.h"
#include "tools/keelctl/cluster_commands.h"
#include "tools/keelctl/command_line.h"

namespace keel {

const char* const kConsoleUsage =
    "usage: keelctl --socket PATH console [--history N|all] [--read-only] [--force]\n"
    "                                     [--wait SEC] [--dump]\n"
    "       keelctl vm console NAME [--agent SOCKET] [the same options]\n"
    "\n"
    "Attaches to the guest's serial console (COM1) through keel-vmm's control socket;\n"
    "vm console: to a cluster VM's, from any host (the agents relay it to the VMM).\n"
    "On a terminal: raw mode; the escape key is Ctrl-], then\n"
    "    .        detach (the VM runs on)\n"
    "    b        send a BREAK (Linux's serial console: SysRq; then the SysRq key)\n"
    "    Ctrl-]   send Ctrl-] itself\n"
    "Not on a terminal (scripts): standard input goes to the guest, the output to\n"
    "standard output; keelctl ends when the VM stops, or once standard input ended\n"
    "and the guest printed nothing for --wait seconds (default 1).\n"
    "Options:\n"
    "  --history N|all  first the last N bytes of output kept (all: everything\n"
    "                   kept); default 2048 on a terminal, 0 otherwise\n"
    "  --read-only      watch only; any number of clients may, one may write\n"
    "  --force          take the console from the client writing to it (it is\n"
    "                   told, and becomes read-only)\n"
    "  --wait SEC       see above; with --read-only, end after SEC quiet seconds\n"
    "                   (default: follow until the VM stops)\n"
    "  --dump           print the history (--history; default all) and end,\n"
    "                   read-only\n";

namespace {

namespace pb = ::keel::api::v1;

constexpr char kEscape = 0x1d;  // Ctrl-]

struct ConsoleOptions {
  std::string socket;
  std::string vm;                   // keelctl vm console NAME: through the agent
  std::string agent;                // its socket (--agent, else $KEEL_AGENT, else the default)
  std::optional<uint64_t> history;  // bytes back; nullopt: the default
  bool all = false;
  bool read_only = false;
  bool force = false;
  bool dump = false;
  std::optional<double> wait_s;
  bool help = false;
};

ConsoleOptions parse(int argc, char** argv) {
  ConsoleOptions options;
  if (const char* socket = std::getenv("KEEL_API_SOCKET")) options.socket = socket;
  bool seen_command = false, seen_vm = false, socket_given = false;
  options.agent = default_agent();
  CommandLine line(argc, argv);
  while (line.next()) {
    const std::string& arg = line.word();
    if (arg == "--help" || arg == "-h") {
      options.help = true;
    } else if (arg == "--socket") {
      options.socket = line.value();
      socket_given = true;
    } else if (arg == "--agent") {
      options.agent = agent_target(line.value());
    } else if (arg == "--history") {
      const std::string v = line.value();
      if (v == "all") {
        options.all = true;
      } else {
        uint64_t n = 0;
        auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (ec != std::errc() || end != v.data() + v.size())
          throw UsageError{"invalid value for --history: '" + v + "' (bytes, or all)"};
        options.history = n;
      }
    } else if (arg == "--read-only") {
      options.read_only = true;
    } else if (arg == "--force") {
      options.force = true;
    } else if (arg == "--dump") {
      options.dump = true;
      options.read_only = true;
    } else if (arg == "--wait") {
      options.wait_s = line.seconds();
    } else if (arg == "vm" && !seen_vm && !seen_command) {
      seen_vm = true;
    } else if (arg == "console" && !seen_command) {
      seen_command = true;
    } else if (seen_vm && seen_command && options.vm.empty() && arg.rfind("-", 0) != 0) {
      options.vm = arg;
    } else {
      throw UsageError{"console: unexpected '" + arg + "'"};
    }
  }
  if (options.help) return options;
  if (seen_vm) {
    if (options.vm.empty()) throw UsageError{"vm console needs the VM's name"};
    if (socket_given) throw UsageError{"vm console goes through the agent: no --socket"};
    options.socket.clear();  // $KEEL_API_SOCKET is for `keelctl console`
  } else if (options.socket.empty()) {
    throw UsageError{"no socket: give --socket PATH"};
  }
  if (options.force && options.read_only)
    throw UsageError{"--force is for writers, not --read-only or --dump"};
  if (options.dump && !options.history) options.all = true;
  return options;
}

volatile std::sig_atomic_t g_signal = 0;

void on_signal(int signal) {
  g_signal = signal;
}

// The terminal in raw mode while this lives; put back however keelctl ends.
class RawTerminal {
 public:
  RawTerminal() {
    if (::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    ::cfmakeraw(&raw);
    if (::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0) active_ = true;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  termios saved_{};
  bool active_ = false;
};

// False when `fd` is gone (a closed pipe: `keelctl console | head`).
bool write_all(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, -1);
    } else {
      return false;
    }
  }
  return true;
}

class Session {
 public:
  Session(const ConsoleOptions& options, ConsoleLink& console, bool terminal)
      : options_(options), console_(console), terminal_(terminal) {
    writer_ = console.attached().writer();
  }

  int run() {
    if (options_.dump) return dump();
    std::optional<RawTerminal> raw;
    if (terminal_) {
      raw.emplace();
      say(std::string("attached to the console ") + (writer_ ? "read-write" : "read-only") +
          " (Ctrl-] . detaches, Ctrl-] b sends BREAK)");
    }
    bool stdin_open = terminal_ || writer_;
    // Seconds of quiet after which keelctl ends once input ended; < 0: never.
    const double quiet_s = options_.wait_s.value_or(!terminal_ && writer_ ? 1.0 : -1.0);
    auto last_output = std::chrono::steady_clock::now();
    for (;;) {
      if (g_signal != 0) {
        say("detached (signal " + std::to_string(g_signal) + ")");
        return 0;
      }
      // Input not yet taken by the VMM (the guest reads slowly) is waited for.
      if (!stdin_open && quiet_s >= 0 && !console_.wants_write()) {
        const auto quiet = std::chrono::steady_clock::now() - last_output;
        if (quiet >= std::chrono::duration<double>(quiet_s)) return 0;
      }
      pollfd fds[2] = {{console_.fd(), console_.poll_events(), 0}, {STDIN_FILENO, 0, 0}};
      // Input waits while the VMM has not taken the last of it (the guest
      // reads slower than this client types or pastes).
      if (stdin_open && !console_.wants_write()) fds[1].events = POLLIN;
      const int ready = ::poll(fds, fds[1].events ? 2 : 1, quiet_s >= 0 && !stdin_open ? 50 : 1000);
      if (ready < 0 && errno != EINTR)
        throw std::system_error(errno, std::generic_category(), "poll");
      if (fds[0].revents & POLLOUT) console_.flush();
      if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        std::vector<pb::ConsoleOutput> frames;
        const bool open = console_.receive(frames);
        for (const auto& frame : frames) {
          if (!show(frame)) return 0;  // standard output closed: nobody reads on
          if (!frame.data().empty()) last_output = std::chrono::steady_clock::now();
        }
        if (!open) {
          const std::string why = console_.closed_because();
          say(why.empty() ? "the console closed (the VM stopped)" : why);
          return 0;
        }
      }
      if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
        char buffer[4096];
        const ssize_t n = ::read(STDIN_FILENO, buffer, sizeof buffer);
        if (n > 0) {
          if (typed(std::string(buffer, static_cast<size_t>(n)))) return 0;
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          stdin_open = false;
          last_output = std::chrono::steady_clock::now();
          if (terminal_) return 0;
        }
      }
      console_.flush();
    }
  }

 private:
  // The history up to where it ended at the attach, then the end.
  int dump() {
    const uint64_t end = console_.attached().history_end();
    uint64_t at = console_.attached().offset();
    pb::ConsoleOutput frame;
    while (at < end) {
      if (!console_.wait_for(frame, std::chrono::seconds(10))) {
        say("the console ended before its history was sent");
        return 4;
      }
      if (!show(frame)) return 0;
      at = frame.offset() + frame.data().size();
    }
    return 0;
  }

  // Keys from standard input; true when the user detached.
  bool typed(const std::string& keys) {
    if (!terminal_) {
      if (writer_) console_.send(keys);
      return false;
    }
    std::string out;
    for (char c : keys) {
      if (escaped_) {
        escaped_ = false;
        if (c == '.') {
          send(out);
          say("detached");
          return true;
        }
        if (c == 'b') {
          send(out, true);
          out.clear();
          continue;
        }
        out.push_back(c);  // Ctrl-] itself, or a key after it: sent as it is
        continue;
      }
      if (c == kEscape) {
        escaped_ = true;
        continue;
      }
      out.push_back(c);
    }
    send(out);
    return false;
  }

  void send(const std::string& keys, bool send_break = false) {
    if (keys.empty() && !send_break) return;
    if (!writer_) {
      if (!told_read_only_) say("read-only: keys are not sent to the guest");
      told_read_only_ = true;
      return;
    }
    console_.send(keys, send_break);
  }

  // False when standard output is gone.
  bool show(const pb::ConsoleOutput& frame) {
    if (frame.missed() != 0) {
      say(std::to_string(frame.missed()) +
          " bytes of console output missed (this client read too slowly)");
    }
    if (!frame.data().empty() && !write_all(STDOUT_FILENO, frame.data())) return false;
    if (!frame.notice().empty()) say(frame.notice());
    writer_ = frame.writer();
    return true;
  }

  // keelctl's own words, apart from the guest's output.
  void say(const std::string& text) const {
    write_all(STDERR_FILENO,
              (terminal_ ? "\r\n[keelctl: " : "keelctl: ") + text + (terminal_ ? "]\r\n" : "\n"));
  }

  const ConsoleOptions& options_;
  ConsoleLink& console_;
  const bool terminal_;
  bool writer_ = false;
  bool escaped_ = false;
  bool told_read_only_ = false;
};

}  // namespace

bool is_console_command(int argc, char** argv) {
  bool vm = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("-", 0) == 0) {
      if (arg.find('=') == std::string::npos &&
          (arg == "--socket" || arg == "--history" || arg == "--wait" || arg == "--agent"))
        ++i;
      continue;
    }
    if (arg == "vm" && !vm) {
      vm = true;
      continue;
    }
    return arg == "console";
  }
  return false;
}

int run_console_command(int argc, char** argv) {
  ConsoleOptions options;
  try {
    options = parse(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "keelctl: " << e.message << "\n" << kConsoleUsage;
    return 2;
  }
  if (options.help) {
    std::cout << kConsoleUsage;
    return 0;
  }
  const bool terminal = ::isatty(STDIN_FILENO) != 0;
  pb::ConsoleAttach attach;
  if (options.all) {
    attach.set_from_start(true);
  } else {
    attach.set_bytes_back(options.history.value_or(terminal ? 2048 : 0));
  }
  attach.set_write(!options.read_only);
  attach.set_force(options.force);
  struct sigaction action {};
  action.sa_handler = on_signal;  // no SA_RESTART: poll returns to look at it
  for (int signal : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(signal, &action, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  try {
    if (!options.vm.empty()) {
      AgentConsole console(options.agent, options.vm, attach);
      return Session(options, console, terminal).run();
    }
    ConsoleConnection console(options.socket, attach, std::chrono::seconds(10));
    return Session(options, console, terminal).run();
  } catch (const cluster::AgentCallError& e) {
    return exit_of("vm console " + options.vm, e);
  } catch (const ConsoleRefused& e) {
    std::cerr << "keelctl: console: " << e.what() << '\n';
    return 1;
  } catch (const ControlClientError& e) {
    std::cerr << "keelctl: " << e.what() << '\n';
    return e.kind() == ControlClientError::Kind::kConnect ? 3 : 4;
  } catch (const std::exception& e) {
    std::cerr << "keelctl: console: " << e.what() << '\n';
    return 4;
  }
}

}  // namespace keel
