// Debian 12's installer (netboot, text frontend: guest-images/debian-installer/fetch)
// booted on keel-vmm with its serial console, and driven through keelctl
// console in a terminal (tmux) from its first menu on, as a person would:
// Enter on the language, an arrow key and Enter on the location, Enter on
// the keymap, then the installer's own screen window 2 (a shell), where the
// answers given are read back from debconf. Label linux.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "tests/support/live_vmm.h"
#include "tests/support/tmux_terminal.h"

namespace keel::testing {
namespace {

using std::chrono::seconds;

std::string installer_dir() {
  const char* cache = std::getenv("KEEL_CACHE");
  return std::string(cache && *cache ? cache : "/var/cache/keel") + "/debian-installer";
}

// One installer driven from its boot; `glitched` (and no failure) when a
// first try met the box's glitch before the first menu.
void drive_installer(bool first_try, bool& glitched) {
  const std::string dir = installer_dir();
  ASSERT_TRUE(std::filesystem::exists(dir + "/linux") &&
              std::filesystem::exists(dir + "/initrd.gz"))
      << dir << " has no linux and initrd.gz: run guest-images/debian-installer/fetch "
      << "(tools/setup --tests does)";
  LiveVmm vmm({"--kernel", dir + "/linux", "--initrd", dir + "/initrd.gz", "--memory", "1G",
               "--cmdline", "console=ttyS0"});
  // The kernel's first line: keel-vmm listens on its socket by then.
  ASSERT_TRUE(vmm.wait_line("[    0.000000] Linux version", 0, seconds(120))) << vmm.describe();
  TmuxTerminal terminal(std::string(keelctl_path()) + " --socket " + vmm.socket_path() +
                        " console");
  const auto vm_ended = [&] { return vmm.output_closed(); };
  const bool menu = terminal.wait_for("Select a language", seconds(600), vm_ended);
  if (!menu && first_try && box_boot_glitch(vmm, "debian_installer_test")) {
    glitched = true;
    return;
  }
  ASSERT_TRUE(menu) << terminal.screen() << vmm.describe();

  terminal.keys({"Enter"});  // English
  ASSERT_TRUE(terminal.wait_for("Select your location", seconds(300), vm_ended))
      << terminal.screen();
  // United States is chosen; one up is the United Kingdom (an escape
  // sequence through the console, then Enter).
  terminal.keys({"Up"});
  terminal.keys({"Enter"});
  ASSERT_TRUE(terminal.wait_for("Configure the keyboard", seconds(300), vm_ended))
      << terminal.screen();
  terminal.keys({"Enter"});  // American English

  // The installer runs in GNU screen on a serial console: C-a 2 is its
  // shell window.
  terminal.keys({"C-a", "2"});
  ASSERT_TRUE(terminal.wait_for("built-in shell (ash)", seconds(300), vm_ended))
      << terminal.screen();
  terminal.line(
      "echo answers: country=$(debconf-get debian-installer/country)"
      " locale=$(debconf-get debian-installer/locale) sum=$((6*7))");
  EXPECT_TRUE(
      terminal.wait_for("answers: country=GB locale=en_GB.UTF-8 sum=42", seconds(300), vm_ended))
      << terminal.screen();

  terminal.keys({"C-]", "."});
  EXPECT_TRUE(terminal.wait_for("[keelctl: detached]", seconds(30))) << terminal.screen();
  auto killed = vmm.keelctl({"kill"});
  EXPECT_EQ(killed.exit_code, 0) << killed.err;
  EXPECT_TRUE(vmm.wait_exit(seconds(60)).has_value());
}

TEST(DebianInstaller, DrivenThroughKeelctlConsoleFromTheFirstMenu) {
  bool glitched = false;
  drive_installer(true, glitched);
  if (glitched) drive_installer(false, glitched);
}

}  // namespace
}  // namespace keel::testing
