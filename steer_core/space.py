"""What a Hugging Face Space needs from this repository, and putting it there.

The Hub refuses a push that holds binary files outside LFS/Xet, so every binary a Space needs must match
an LFS rule in .gitattributes (tests/test_space.py checks it), and the upload goes through the Hub's own
client (`HfApi.upload_folder`, what `hf upload` runs), which stores those files in LFS/Xet whatever this
repository's git history holds. results/ (all but the rows the "Does it steer?" view reads), docs/,
experiments/ and tests/ are not needed to serve.
"""

from __future__ import annotations

import fnmatch
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .paths import ROOT

# What the Space serves from: the app and its ui/ package, the engine package, the shipped assets, the rows
# behind "Does it steer?".
SPACE_FILES = (
    "README.md",  # its front matter is the Space's configuration (sdk, sdk_version, app_file)
    ".gitattributes",
    "app.py",
    "ui/",  # the app's tabs, which app.py wires
    "requirements.txt",
    "steer_core/",
    "assets/",
    "results/frontier/",
)
SKIPPED = ("*/__pycache__/*", "*.pyc")
# Files the default steering cannot start without (a Space missing one serves errors).
REQUIRED = (
    "app.py",
    "ui/__init__.py",
    "requirements.txt",
    "README.md",
    "assets/data/bloom_feedback.jsonl",
    "assets/judge/judge_weights.safetensors",
    "assets/adapter/adapter_model.safetensors",
)


@dataclass(frozen=True)
class SpaceFile:
    path: str
    size: int
    lfs: bool  # matched by an LFS rule of .gitattributes


def tracked_files(root: Path = ROOT) -> list[str]:
    """The repository's tracked files (a checkout without git: every file under root)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, timeout=30)
        return sorted(p for p in out.stdout.decode().split("\0") if p)
    except (OSError, subprocess.SubprocessError):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts)


def lfs_rules(root: Path = ROOT) -> list[str]:
    """The patterns .gitattributes sends through LFS (filter=lfs)."""
    f = root / ".gitattributes"
    if not f.is_file():
        return []
    rules = []
    for line in f.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            rules.append(parts[0])
    return rules


def matches(path: str, rule: str) -> bool:
    """gitattributes matching: a rule without a slash matches the file name at any depth; one with a slash
    matches the path from the root (** spanning folders)."""
    if "/" not in rule.rstrip("/"):
        return fnmatch.fnmatchcase(Path(path).name, rule)
    return fnmatch.fnmatchcase(path, rule.lstrip("/").replace("**/", "*").replace("/**", "/*"))


def is_binary(path: Path) -> bool:
    """Git's test: a NUL byte in the first 8000 bytes."""
    with open(path, "rb") as fh:
        return b"\0" in fh.read(8000)


def in_space(path: str) -> bool:
    if any(fnmatch.fnmatchcase(path, s) for s in SKIPPED):
        return False
    return any(path == s or (s.endswith("/") and path.startswith(s)) for s in SPACE_FILES)


def space_files(root: Path = ROOT) -> list[SpaceFile]:
    """Every file the Space gets, with its size and whether an LFS rule covers it."""
    rules = lfs_rules(root)
    return [
        SpaceFile(p, (root / p).stat().st_size, any(matches(p, r) for r in rules))
        for p in tracked_files(root)
        if in_space(p) and (root / p).is_file()
    ]


def check(root: Path = ROOT) -> list[SpaceFile]:
    """space_files, or a UserError naming a required file that is missing or a binary no LFS rule covers."""
    files = space_files(root)
    have = {f.path for f in files}
    missing = [p for p in REQUIRED if p not in have]
    if missing:
        raise UserError(f"the Space would lack {', '.join(missing)}")
    loose = [f.path for f in files if not f.lfs and is_binary(root / f.path)]
    if loose:
        raise UserError(
            f"binary files no LFS rule in .gitattributes covers (the Hub would refuse them): {', '.join(loose[:5])}"
        )
    return files


def upload(repo_id: str, root: Path = ROOT, files: list[SpaceFile] | None = None) -> str:
    """Upload the Space's files with the Hub's client (binaries stored in LFS/Xet); returns the commit's URL."""
    from huggingface_hub import HfApi

    files = files if files is not None else check(root)
    api = HfApi()
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        repo_type="space",
        folder_path=str(root),
        allow_patterns=[f.path for f in files],
        commit_message="Bloom steering demo",
    )
    return str(getattr(info, "commit_url", info))


def human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)
