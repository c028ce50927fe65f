"""Command-line checks that need no model: bad steering options fail with one line and exit 2."""

import subprocess
import sys

import pytest
from conftest import ROOT


def run(*args):
    return subprocess.run([sys.executable, "-m", "steer_core", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize(
    "args,message",
    [
        (["generate", "--question", "q", "--answer", "a", "--adapter", "/no/such/adapter"], "no LoRA adapter"),
        (["generate", "--question", "q", "--answer", "a", "--adapter", ".", "--no-adapter"], "exclude each other"),
        (["eval", "--out", "x", "--variants", "sideways:1"], "--variants"),
        (["eval", "--out", "x", "--variants", "learned:-1"], "--variants"),
        (["fit-offsets", "--layers", "8-x"], "--layers"),
        (["prototypes", "--writers", "Z", "--out", "x", "--layers", "nine"], "--layers"),
    ],
)
def test_bad_steering_options_exit_2_with_one_line(args, message):
    out = run(*args)
    assert out.returncode == 2, out.stderr[-1500:]
    assert message in out.stderr and "Traceback" not in out.stderr


def test_new_commands_are_listed():
    out = run("--help")
    for cmd in ("fit-offsets", "prototypes", "train-adapter", "summarize"):
        assert cmd in out.stdout


def test_heads_as_layer_head_pairs_steer_only_those():
    from steer_core.errors import UserError
    from steer_core.layer_spec import parse_heads
    from steer_core.steering.config import SteerConfig

    assert parse_heads("all") == parse_heads(None) == parse_heads(" ") == (None, None)
    assert parse_heads("3,0,3") == parse_heads([3, 0, 3]) == ((0, 3), None)  # CLI text or the app's checkboxes
    assert parse_heads("18.6, 8.0,18.7") == (None, ((8, 0), (18, 6), (18, 7)))
    assert parse_heads([]) == ((), None)  # an empty selection, for the caller to refuse
    with pytest.raises(UserError, match="layer.head"):
        parse_heads("18.x")
    cfg = SteerConfig(layers=(8, 18), layer_heads=((8, 0), (18, 6), (18, 7)))
    assert cfg.heads_at(18) == (6, 7) and cfg.heads_at(8) == (0,)
    assert "heads 8.0,18.6,18.7" in cfg.label
    assert SteerConfig(heads=(1, 2)).heads_at(5) == (1, 2)
    with pytest.raises(ValueError, match="exactly the layers"):
        SteerConfig(layers=(8, 9), layer_heads=((8, 0),))
    with pytest.raises(ValueError, match="not both"):
        SteerConfig(layers=(8,), heads=(1,), layer_heads=((8, 0),))


def test_user_errors_exit_2_and_bugs_are_not_disguised(monkeypatch, capsys):
    from steer_core import cli
    from steer_core.errors import UserError

    def fails(exc):
        def cmd(args):
            raise exc

        return cmd

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["judge"].set_defaults(func=fails(UserError("bad level 'x'")))
    assert cli.main(["judge", "f.jsonl"]) == 2
    assert "error: bad level 'x'" in capsys.readouterr().err
    parser._subparsers._group_actions[0].choices["judge"].set_defaults(func=fails(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["judge", "f.jsonl"])


def test_every_generate_method_parses_to_a_steering_config():
    """--method names the generation method; the steering flags build the same config for all of them."""
    from steer_core import methods
    from steer_core.cli import build_parser
    from steer_core.cli.common import steer_config as _steer_config
    from steer_core.steering.config import SteerConfig

    for m in methods.names():
        args = build_parser().parse_args(["generate", "--question", "q", "--answer", "a", "--method", m])
        assert _steer_config(args, SteerConfig().layers) == SteerConfig()
