"""The user's project as a git repository in a temp folder: a copy of the project's files, one commit,
a clean tree, the given version. `inv release` commits and tags in it; `inv` runs with it as cwd."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
FILES = ("tasks.py", "invoke.yaml", "version.txt", "docker", "nomad", "ansible")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def make(root: Path, version: str = "0.99", files=FILES) -> Path:
    root.mkdir(parents=True)
    for name in files:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    (root / "version.txt").write_text(f"{version}\n")
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "config", "user.name", "Release Tester")
    git(root, "config", "user.email", "release@example.com")
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "--message", "the project")
    return root
