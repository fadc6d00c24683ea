"""Native library messages are captured (fd 2), summarised in one line, and shown raw with --verbose."""

import os
import subprocess
import sys

from edgeclip.native_output import captured

NATIVE = b"[W qlinear_dynamic.cpp:251] Warning: Currently, qnnpack incorrectly ignores reduce_range\n" \
         b"[cpuinfo_utils.cpp:87] Failed to open midr file /sys/devices/soc0/image_version\n"


def test_native_writes_to_fd2_are_captured_not_printed(capfd):
    import warnings

    with captured() as cap:
        os.write(2, NATIVE)                                     # what C++ code does: no Python in between
        warnings.warn("Quantizer.cpp deprecation", DeprecationWarning)
        subprocess.run([sys.executable, "-c", "import os; os.write(2, b'child native line\\n')"], check=True)
    err = capfd.readouterr().err
    assert "qlinear_dynamic" not in err and "midr" not in err and "child native line" not in err
    assert any("qlinear_dynamic.cpp:251" in line for line in cap.lines) and "child native line" in cap.lines
    assert any(line.startswith("DeprecationWarning: Quantizer.cpp") for line in cap.lines)
    assert cap.sources[:2] == ["qlinear_dynamic.cpp", "cpuinfo_utils.cpp"] or "qlinear_dynamic.cpp" in cap.sources
    s = cap.summary()
    assert s.startswith("4 lines of library messages hidden (from ") and "--verbose" in s
    os.write(2, b"after\n")                                     # fd 2 is restored afterwards
    assert "after" in capfd.readouterr().err


def _cli(*args):
    code = ("import os, sys, click\n"
            "from edgeclip.cli import main, verbose_option\n"
            "@main.command('noisy')\n"
            "@verbose_option\n"
            "def noisy():\n"
            "    os.write(2, b'[cpuinfo_utils.cpp:87] Failed to open midr file\\n')\n"
            "    click.echo('result line')\n"
            "    click.echo('library print to sys.stderr', err=True)\n"
            "    from edgeclip.native_output import terminal\n"
            "    terminal().write('progress bar\\n')\n"
            "main()\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)


def test_cli_prints_a_summary_and_verbose_prints_the_raw_text():
    r = _cli("noisy")
    assert r.returncode == 0 and r.stdout == "result line\n"
    assert "Failed to open midr file" not in r.stderr
    assert "progress bar" in r.stderr and "library print" not in r.stderr
    assert "Note: 2 lines of library messages hidden (from cpuinfo_utils.cpp, other); --verbose shows them" in r.stderr
    for flags in (["--verbose", "noisy"], ["noisy", "--verbose"]):
        r = _cli(*flags)
        assert r.returncode == 0 and "[cpuinfo_utils.cpp:87] Failed to open midr file" in r.stderr and "hidden" not in r.stderr
