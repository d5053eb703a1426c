// keelctl console: the guest's serial console through keel-vmm's control
// socket (control/console_connection.h). On a terminal: raw mode, the
// escape key Ctrl-] (then . detaches, b sends BREAK, Ctrl-] sends itself).
// Otherwise (a script): standard input to the guest, output to standard
// output, until the VM stops, or standard input ended and the guest was
// quiet for --wait seconds.
#pragma once

namespace keel {

// Whether argv's first command word is console.
bool is_console_command(int argc, char** argv);
// Runs it; keelctl's exit codes (0 detached or the VM stopped, 1 refused,
// 2 bad command line, 3 cannot connect, 4 no answer or a broken stream).
int run_console_command(int argc, char** argv);

extern const char* const kConsoleUsage;

}  // namespace keel
