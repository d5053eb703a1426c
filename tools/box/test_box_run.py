#!/usr/bin/env python3
"""Unit tests for tools/box/box_run.py: when a box is sick, what a run
exits with, when the command runs again, and that what the box's shell
reads back is what was meant."""
import os
import subprocess
import sys
import unittest
import unittest.mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import box_run as br  # noqa: E402


class Sickness(unittest.TestCase):
    def test_a_soft_lockup_or_rcu_stall_on_the_console_is_sick(self):
        for line in (b"[  412.1] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [kthreadd:2]",
                     b"[  500.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
                     b"rcu: \t1-....: (1 GPs behind) self-detected stall on CPU"):
            self.assertEqual(br.sickness(b"boot\n" + line + b"\n", 100.0, 101.0, 180), "its kernel locked up")

    def test_a_fault_in_the_box_kernel_is_sick(self):
        for line in (b"[  319.3] BUG: TASK stack guard page was hit at 0000000035b5f9e3",
                     b"[  12.0] general protection fault, probably for non-canonical address",
                     b"[  13.0] Oops: 0000 [#1] PREEMPT SMP NOPTI",
                     b"[  391.3] Kernel panic - not syncing: corrupted stack end"):
            self.assertEqual(br.sickness(line + b"\n", 100.0, 101.0, 180), "its kernel hit a bug")

    def test_silence_longer_than_frozen_after_is_sick(self):
        self.assertIsNone(br.sickness(b"", 1000.0, 1180.0, 180))
        self.assertEqual(br.sickness(b"", 1000.0, 1181.5, 180),
                         "it stopped making progress (no sign of life for 181s)")

    def test_before_the_first_sign_of_life_only_the_console_counts(self):
        # The box is still booting (no alive file yet): the timeout covers it.
        self.assertIsNone(br.sickness(b"Booting the kernel\n", None, 1e9, 180))

    def test_ordinary_warnings_are_not_sickness(self):
        self.assertIsNone(br.sickness(b"kvm [207]: vcpu0, guest rIP: 0x1 Unhandled WRMSR(0xc0010007)\n",
                                      100.0, 101.0, 180))


class Verdict(unittest.TestCase):
    def test_the_commands_status_passes_through(self):
        self.assertEqual(br.verdict(False, None, "0\n", 900), (0, None))
        self.assertEqual(br.verdict(False, None, "3", 900), (3, None))
        self.assertEqual(br.verdict(False, None, "255\n", 900), (255, None))

    def test_a_timeout_is_124_even_when_the_command_left_a_status(self):
        self.assertEqual(br.verdict(True, None, "0", 60), (124, "timed out after 60s, box killed"))

    def test_a_sick_box_is_125(self):
        rc, message = br.verdict(False, "its kernel locked up", None, 900)
        self.assertEqual(rc, 125)
        self.assertIn("the box is sick: its kernel locked up", message)

    def test_no_or_a_garbled_status_is_125(self):
        self.assertEqual(br.verdict(False, None, None, 900)[0], 125)
        for text in ("", "abc", "-1", "256", "1 2"):
            rc, message = br.verdict(False, None, text, 900)
            self.assertEqual(rc, 125, text)
            self.assertIn("exit status file holds", message)


class Retry(unittest.TestCase):
    def test_only_a_failed_box_runs_again_and_only_as_often_as_asked(self):
        self.assertTrue(br.should_retry(125, 0, 1))
        self.assertFalse(br.should_retry(125, 1, 1))
        self.assertFalse(br.should_retry(125, 0, 0))

    def test_a_timeout_or_the_commands_own_failure_never_runs_again(self):
        for rc in (0, 1, 2, 124, 130):
            self.assertFalse(br.should_retry(rc, 0, 5), rc)

    def test_the_run_dir_is_kept_for_anything_worth_a_look(self):
        self.assertFalse(br.keep_run_dir(False, None, "0", False))
        self.assertFalse(br.keep_run_dir(False, None, "1", False))
        self.assertTrue(br.keep_run_dir(True, None, "0", False))
        self.assertTrue(br.keep_run_dir(False, "sick", None, False))
        self.assertTrue(br.keep_run_dir(False, None, None, False))
        self.assertTrue(br.keep_run_dir(False, None, "0", True))


class Visibility(unittest.TestCase):
    def test_a_directory_under_a_box_tmpfs_must_be_shared(self):
        br.check_visible("/work/main/build", "/work/main/build", None)
        br.check_visible("/tmp/clone/build", "/tmp/clone/build", None)
        br.check_visible("/tmp/clone/tests", "/tmp/clone/build", "/tmp/clone")
        br.check_visible("/srv/x", "/var/tmp/w", None)  # the host's root is the box's
        with self.assertRaisesRegex(br.BoxError, r"/tmp/clone is not visible in the box \(under /tmp"):
            br.check_visible("/tmp/clone", "/var/tmp/w", None)
        with self.assertRaisesRegex(br.BoxError, r"under /run"):
            br.check_visible("/run/user", "/var/tmp/w", None)

    def test_under_is_by_path_component(self):
        self.assertTrue(br.under("/tmp", "/tmp"))
        self.assertTrue(br.under("/tmp/a", "/tmp"))
        self.assertFalse(br.under("/tmpx", "/tmp"))


class Quoting(unittest.TestCase):
    NASTY = ["plain", "with space", "it's", "$(touch /nonexistent)", "a\"b", "back\\slash", "new\nline", ""]

    def test_box_env_reads_back_in_sh(self):
        for value in self.NASTY:
            env = br.box_env(value, value, 900)
            out = subprocess.run(["sh", "-c", env + 'printf %s "$BOX_WORK"'], capture_output=True, check=True)
            self.assertEqual(out.stdout.decode(), value)
        self.assertIn("BOX_DUMP_AFTER=855", br.box_env("/w", "", 900))
        self.assertNotIn("BOX_DUMP_AFTER", br.box_env("/w", "", 60))

    def test_the_command_script_runs_the_command_as_given(self):
        script = br.command_script("/", ["printf", "[%s]"] + self.NASTY, [("KEEL_X", "it's $HOME")])
        script = script.replace("exec printf", 'printf "%s|" "$KEEL_X"; exec printf')
        out = subprocess.run(["bash", "-c", script], capture_output=True, check=True)
        self.assertEqual(out.stdout.decode(), "it's $HOME|" + "".join("[%s]" % v for v in self.NASTY))

    def test_a_directory_the_box_lacks_exits_125(self):
        script = br.command_script("/nonexistent/dir", ["true"], [])
        out = subprocess.run(["bash", "-c", script], capture_output=True)
        self.assertEqual(out.returncode, 125)
        self.assertIn(b"cannot enter /nonexistent/dir", out.stderr)

    def test_path_keel_variables_and_named_ones_pass(self):
        env = {"PATH": "/bin", "KEEL_B": "2", "KEEL_A": "1", "GTEST_FILTER": "x", "HOME": "/root"}
        self.assertEqual(br.passed_env(env, ["GTEST_FILTER", "MISSING"]),
                         [("PATH", "/bin"), ("GTEST_FILTER", "x"), ("KEEL_A", "1"), ("KEEL_B", "2")])


class Options(unittest.TestCase):
    def test_bad_options_are_box_errors(self):
        for argv, why in ((["--timeout", "0", "--", "true"], "bad --timeout"),
                          (["--env", "A-B", "--", "true"], "bad --env name"),
                          ([], "no command")):
            with self.assertRaisesRegex(br.BoxError, why):
                br.parse(["--cache", "/c"] + argv)

    def test_qemu_options_come_first_and_the_box_shares_follow(self):
        argv = br.qemu_command("/q/qemu", ["-L", "/q/share"], "/cache", 2, 6144, "/run/con", "/run",
                               "/w", None)
        self.assertEqual(argv[:3], ["/q/qemu", "-L", "/q/share"])
        self.assertIn("local,path=/w,mount_tag=keelwork,security_model=none,multidevs=remap", argv)
        self.assertIn("/cache/initramfs.cpio", argv)

    def test_npt_off_is_asked_of_the_init_on_the_kernel_command_line(self):
        args = ("/q/qemu", [], "/cache", 2, 6144, "/run/con", "/run", "/w", None)
        on = br.qemu_command(*args)
        off = br.qemu_command(*args, npt=False)
        self.assertNotIn("keel.npt=0", on[on.index("-append") + 1])
        self.assertTrue(off[off.index("-append") + 1].endswith(" keel.npt=0"))

    def test_keel_box_npt_is_0_or_1(self):
        for value, npt in (("0", False), ("1", True)):
            with unittest.mock.patch.dict(os.environ, {"KEEL_BOX_NPT": value}):
                self.assertEqual(br.parse(["--cache", "/c", "--", "true"])[0].npt, npt)
        with unittest.mock.patch.dict(os.environ, {"KEEL_BOX_NPT": "off"}):
            with self.assertRaisesRegex(br.BoxError, "bad KEEL_BOX_NPT 'off'"):
                br.parse(["--cache", "/c", "--", "true"])

    def test_the_command_follows_the_double_dash(self):
        opts, command = br.parse(["--cache", "/c", "--retry-sick", "1", "--", "ctest", "--timeout", "5"])
        self.assertEqual(command, ["ctest", "--timeout", "5"])
        self.assertEqual(opts.retry_sick, 1)


if __name__ == "__main__":
    unittest.main()
