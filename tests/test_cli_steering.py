"""Command-line checks that need no model: bad steering options fail with one line and exit 2."""

import subprocess
import sys

import pytest

from conftest import ROOT


def run(*args):
    return subprocess.run([sys.executable, "-m", "steer_core", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("args,message", [
    (["generate", "--question", "q", "--answer", "a", "--adapter", "/no/such/adapter"], "no LoRA adapter"),
    (["generate", "--question", "q", "--answer", "a", "--adapter", ".", "--no-adapter"], "exclude each other"),
    (["eval", "--out", "x", "--variants", "sideways:1"], "--variants"),
    (["eval", "--out", "x", "--variants", "learned:-1"], "--variants"),
    (["fit-offsets", "--layers", "8-x"], "--layers"),
    (["prototypes", "--writers", "Z", "--out", "x", "--layers", "nine"], "--layers"),
])
def test_bad_steering_options_exit_2_with_one_line(args, message):
    out = run(*args)
    assert out.returncode == 2, out.stderr[-1500:]
    assert message in out.stderr and "Traceback" not in out.stderr


def test_new_commands_are_listed():
    out = run("--help")
    for cmd in ("fit-offsets", "prototypes", "train-adapter", "summarize"):
        assert cmd in out.stdout
