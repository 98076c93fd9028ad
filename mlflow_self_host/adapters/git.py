"""The project's git repository, read and changed with the git command line (what `release` needs).

Every function takes the project folder (``settings.root``); git finds the repository from there.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError


class GitError(UserError):
    """A git command failed; the message is git's own first line of complaint."""


def run(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("git is not installed", hint="apt-get install git") from None
    if check and result.returncode != 0:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise GitError(f"git {args[0]} failed: {said[0] if said else f'exit {result.returncode}'}")
    return result


def output(root: Path, *args: str) -> str:
    """What git prints, or "" when git is missing, fails or is slow (labels and other nice-to-haves)."""
    try:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _out(root: Path, *args: str) -> str:
    return run(root, *args).stdout.strip()


def is_repository(root: Path) -> bool:
    return run(root, "rev-parse", "--is-inside-work-tree", check=False).stdout.strip() == "true"


def head(root: Path) -> str | None:
    """The commit HEAD points at; None in a repository without any commit yet."""
    result = run(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    return result.stdout.strip() or None


def dirty_paths(root: Path) -> list[str]:
    """Modified, staged and untracked files (ignored ones excluded), as `git status --short` shows them."""
    return [line for line in run(root, "status", "--porcelain", "--untracked-files=all").stdout.splitlines() if line]


def tag_exists(root: Path, tag: str) -> bool:
    return run(root, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}", check=False).returncode == 0


def identity(root: Path) -> str | None:
    """The committer git would use (``Name <email>``); None when git has no identity to commit with."""
    result = run(root, "var", "GIT_COMMITTER_IDENT", check=False)
    if result.returncode != 0:
        return None
    return result.stdout.rsplit(">", 1)[0] + ">"


def remotes(root: Path) -> list[str]:
    return _out(root, "remote").splitlines()


@dataclass(frozen=True)
class IndexEntry:
    """A path's entry in the index (``git ls-files -s``), to put back exactly as it was."""

    mode: str
    blob: str


def index_entry(root: Path, path: str) -> IndexEntry | None:
    line = _out(root, "ls-files", "--stage", "--", path)
    if not line:
        return None
    mode, blob = line.split()[:2]
    return IndexEntry(mode, blob)


def set_index_entry(root: Path, path: str, entry: IndexEntry | None) -> None:
    if entry is None:
        run(root, "rm", "--cached", "--quiet", "--ignore-unmatch", "--", path)
    else:
        run(root, "update-index", "--add", "--cacheinfo", f"{entry.mode},{entry.blob},{path}")


def commit_path(root: Path, path: str, message: str) -> str:
    """Commit only ``path`` (other staged changes stay staged, uncommitted); returns the new commit."""
    run(root, "add", "--", path)
    run(root, "commit", "--quiet", "--message", message, "--only", "--", path)
    return _out(root, "rev-parse", "HEAD")


def create_annotated_tag(root: Path, tag: str, message: str) -> None:
    run(root, "tag", "--annotate", "--message", message, tag)


def delete_tag(root: Path, tag: str) -> None:
    run(root, "tag", "--delete", tag)


def move_head_back(root: Path, expected: str, previous: str | None) -> None:
    """Point HEAD (its branch) back at ``previous``, only if it is still at ``expected``."""
    if previous is None:
        run(root, "update-ref", "-m", "release: undo", "-d", "HEAD", expected)
    else:
        run(root, "update-ref", "-m", "release: undo", "HEAD", previous, expected)
