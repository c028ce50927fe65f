"""`python -m steer_core judge` contract: JSON lines out, --summary, one-line errors with exit 2."""

import json
import subprocess
import sys

from conftest import ROOT


def run(*args):
    return subprocess.run([sys.executable, "-m", "steer_core", *args], capture_output=True, text=True, cwd=ROOT)


def test_judge_lines_and_summary(tmp_path):
    f = tmp_path / "in.jsonl"
    rows = [
        {
            "id": "a",
            "feedback": "Write down the formula for the area of a circle and the value of pi to two places.",
            "level": "remember",
        },
        {
            "feedback": "Plan your own experiment to test whether light colour changes how fast cress grows.",
            "level": "create",
        },
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    out = run("judge", str(f))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.strip().splitlines()]
    assert [x["id"] for x in lines] == ["a", 2]
    assert all(set(x) == {"id", "pred", "probs"} and len(x["probs"]) == 6 for x in lines)
    summary = run("judge", str(f), "--summary")
    assert summary.returncode == 0, summary.stderr
    s = json.loads(summary.stdout)
    assert {"accuracy", "macro_f1", "n"} <= set(s) and s["n"] == 2


def test_test_split_summary_meets_target():
    out = run("judge", str(ROOT / "assets/data/bloom_feedback.jsonl"), "--split", "test", "--summary")
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["n"] == 108 and s["accuracy"] >= 0.85


def _one_line_error(out):
    assert out.returncode == 2
    assert out.stdout == ""
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "Traceback" not in out.stderr
    return err[0]


def test_missing_and_malformed_files(tmp_path):
    assert "no such file" in _one_line_error(run("judge", str(tmp_path / "missing.jsonl")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"feedback": "fine text here"}\n{"feedback": \n')
    assert "line 2: invalid JSON" in _one_line_error(run("judge", str(bad)))
    bad.write_text('{"text": "no feedback field"}\n')
    assert "line 1: needs a non-empty string field 'feedback'" in _one_line_error(run("judge", str(bad)))
    bad.write_text("[1, 2]\n")
    assert "expected a JSON object" in _one_line_error(run("judge", str(bad)))
    bad.write_text('{"feedback": "List the planets.", "level": "wizardry"}\n')
    assert "unknown Bloom level" in _one_line_error(run("judge", str(bad)))
    bad.write_text('{"feedback": "List the planets."}\n')
    assert "--summary needs a 'level'" in _one_line_error(run("judge", str(bad), "--summary"))
    bad.write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in _one_line_error(run("judge", str(bad)))
