"""The MLflow block in Nomad's client.hcl, placed exactly as Ansible's ``blockinfile`` places it.

The playbook (ansible/setup_mlflow.yml) runs::

    blockinfile:
      marker: "# {mark} ANSIBLE MANAGED BLOCK"
      marker_begin: MLFLOW_BEGIN
      marker_end: MLFLOW_END
      insertbefore: "}"
      block: <client_config_block(...)>

``with_block`` reproduces ansible-core's ``blockinfile`` (modules/blockinfile.py, ``main``) byte for
byte on the file's bytes, so a host configured by either tool is recognised by the other: when both
markers are present the block between them is replaced in place; otherwise it is inserted before
the last line matching the regex ``}`` (Ansible's ``insertbefore`` searches each line).
``block_in_place`` finds a block that differs from ours only in whitespace outside strings (the
original recipe's, unindented), which configure-host keeps as it is; blockinfile would rewrite it.
Pure functions: no I/O.
"""
from __future__ import annotations

import difflib
import re

from ...core.errors import UserError

MARKER_BEGIN = "# MLFLOW_BEGIN ANSIBLE MANAGED BLOCK"
MARKER_END = "# MLFLOW_END ANSIBLE MANAGED BLOCK"
INSERT_BEFORE = "}"
VOLUMES = (("mlflow-backend-store", "backend_path"), ("mlflow-artifacts", "artifacts_path"))
# The nightly backup's (nomad/mlflow-backup.nomad.hcl): the backups folder, and the second folder when set.
BACKUP_VOLUMES = (("mlflow-backups", "backups_path"), ("mlflow-backups-copy", "backup_copy_path"))

_NL = b"\n"  # os.linesep on the POSIX hosts Ansible writes from


def client_config_block(backend_path: str, artifacts_path: str, backups_path: str = "",
                        backup_copy_path: str = "") -> str:
    """The host_volume stanzas, as the playbook's ``block:`` renders them (ends with a newline): the two of the
    service job, then the backups folder's and the second folder's (each when given)."""
    paths = {"backend_path": backend_path, "artifacts_path": artifacts_path, "backups_path": backups_path,
             "backup_copy_path": backup_copy_path}
    out = []
    for name, key in VOLUMES + BACKUP_VOLUMES:
        if not paths[key]:
            continue
        out += [
            f'  host_volume "{name}" {{',
            f'    path      = "{paths[key]}"',
            "    read_only = false",
            "  }",
        ]
    return "\n".join(out) + "\n"


def _markers() -> tuple[bytes, bytes]:
    return MARKER_BEGIN.encode() + _NL, MARKER_END.encode() + _NL


def find_block(original: bytes) -> tuple[int, int] | None:
    """Line indexes (begin marker, end marker) of the managed block, or None (blockinfile's rule:
    the last line equal to each marker)."""
    marker0, marker1 = _markers()
    n0 = n1 = None
    for i, line in enumerate(original.splitlines(True)):
        if line == marker0:
            n0 = i
        if line == marker1:
            n1 = i
    return None if n0 is None or n1 is None else (n0, n1)


def current_block(original: bytes) -> str | None:
    """The text between the markers, or None when the file has no managed block."""
    found = find_block(original)
    if found is None:
        return None
    lo, hi = sorted(found)
    return b"".join(original.splitlines(True)[lo + 1:hi]).decode("utf-8", "surrogateescape")


# One HCL token: a quoted string whole (whitespace inside it is part of the value), a name or number
# (``a-b`` is one name in HCL, so ``a - b`` is not the same), an operator, any other character.
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|[\w.-]+|==|!=|<=|>=|&&|\|\||=>|<<-?|\S')


def hcl_lines(text: str) -> list[list[str]]:
    """The tokens of each non-blank line: what HCL reads, whatever the indentation, blank lines,
    trailing spaces, tabs or CRLF. Lines stay apart, since a newline ends an HCL attribute."""
    lines = (_TOKEN.findall(line) for line in text.split("\n"))  # HCL's only newline (\x0c, \u2028 are none)
    return [tokens for tokens in lines if tokens]


def block_in_place(original: bytes, block: str) -> bool:
    """True when the managed block (markers in order) holds ``block`` up to whitespace outside
    strings, as the original recipe wrote it (unindented): Nomad reads the same host volumes, so
    its bytes are kept and Nomad is not restarted. Any other difference (a path, read_only, a
    volume name, a comment, a space inside a string) is a change."""
    found = find_block(original)
    if found is None or found[0] > found[1]:
        return False
    return hcl_lines(current_block(original)) == hcl_lines(block)


def with_block(original: bytes, block: str) -> bytes:
    """``original`` with the managed block set to ``block`` (blockinfile ``state: present``)."""
    lines = original.splitlines(True)
    marker0, marker1 = _markers()
    data = block.encode("utf-8", "surrogateescape")
    if data and not data.endswith(_NL):
        data += _NL
    blocklines = [marker0] + data.splitlines(True) + [marker1] if data else []

    found = find_block(original)
    if found is None:
        insertre = re.compile(INSERT_BEFORE.encode())
        n0 = None
        for i, line in enumerate(lines):
            if insertre.search(line):
                n0 = i
        if n0 is None:
            n0 = len(lines)
    else:
        a, b = found
        if a < b:
            lines[a:b + 1] = []
            n0 = a
        else:
            lines[b:a + 1] = []
            n0 = b

    if n0 > 0 and not lines[n0 - 1].endswith(_NL):
        lines[n0 - 1] += _NL
    lines[n0:n0] = blocklines
    return b"".join(lines)


def check_closing_brace(original: bytes, path: str) -> None:
    """A client config with no ``}`` outside the managed block cannot take the block."""
    lines = original.splitlines(True)
    found = find_block(original)
    if found is not None:
        lo, hi = sorted(found)
        lines = lines[:lo] + lines[hi + 1:]
    if not any(INSERT_BEFORE.encode() in line for line in lines):
        raise UserError(
            f"{path} has no closing `}}`: it is not a Nomad client config this task can add to",
            hint="check the file (it should hold a `client { ... }` stanza) or the nomad_client_config setting",
        )


def unified_diff(before: bytes | None, after: bytes, path: str) -> str:
    """A unified diff of two versions of a file, for the plan."""
    a = [] if before is None else before.decode("utf-8", "surrogateescape").splitlines(True)
    b = after.decode("utf-8", "surrogateescape").splitlines(True)
    lines = difflib.unified_diff(a, b, fromfile=f"{path} (host)", tofile=f"{path} (wanted)")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
