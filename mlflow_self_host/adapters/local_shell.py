"""This machine, with the interface of ``ssh.Remote``: where local mode's backups and restores run.

``LocalShell`` runs the same shell commands as the SSH host does (``/bin/sh -c``) and returns the
same ``Result``; ``sudo`` is accepted and ignored (local mode's files are the user's own), and
``put``/``get`` are plain copies. Code that takes a shell (backup, steps/migrate/host_store.py) works on either.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..core.errors import UserError
from .shell import Result, short as _short


class LocalShell:
    """Shell commands and files on this machine; every method as ``Remote``'s."""

    where = "this machine"
    label = "this machine"  # how messages name it (``Remote.label`` is ``user@host``)

    # --- commands ---------------------------------------------------------------------------
    def run(self, cmd: str, sudo: bool = False, check: bool = True) -> Result:
        proc = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True)
        result = Result(proc.stdout, proc.stderr, proc.returncode)
        if check and not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise UserError(f"command failed on {self.where} (exit {result.exited}): {_short(cmd)}"
                            + (f": {detail[-1]}" if detail else ""),
                            hint="run `inv --debug ...` for details, fix it, and run again")
        return result

    # --- files ------------------------------------------------------------------------------
    def read_bytes(self, path: str, sudo: bool = False) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UserError(f"cannot read {path} on {self.where}: {exc.strerror or exc}") from None

    def read(self, path: str, sudo: bool = False) -> str | None:
        data = self.read_bytes(path, sudo=sudo)
        return None if data is None else data.decode("utf-8", "surrogateescape")

    def exists(self, path: str, sudo: bool = False) -> bool:
        return os.path.lexists(path)

    def write(self, path: str, content, owner: str | None = None, group: str | None = None,
              mode: str | None = None, sudo: bool = True) -> None:
        """Replace ``path`` atomically (a temp file in the same folder, then a rename)."""
        data = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else bytes(content)
        target = Path(path)
        tmp = target.with_name(f".{target.name}.msh.{os.getpid()}")
        try:
            tmp.write_bytes(data)
            if target.exists():
                shutil.copymode(target, tmp)
            else:
                os.chmod(tmp, 0o644)
            if owner or group:
                shutil.chown(tmp, user=owner or None, group=group or None)
            if mode:
                os.chmod(tmp, int(str(mode), 8))
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write {path} on {self.where}: {exc.strerror or exc}") from None

    def put(self, local, remote: str, owner: str | None = None, group: str | None = None,
            mode: str | None = None, sudo: bool = False) -> None:
        self.write(remote, Path(local).read_bytes(), owner=owner, group=group, mode=mode, sudo=sudo)

    def get(self, remote: str, local, sudo: bool = False) -> None:
        try:
            shutil.copyfile(remote, local)
        except FileNotFoundError:
            raise UserError(f"{remote} not found on {self.where}") from None

    # --- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        pass

    def __enter__(self) -> "LocalShell":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
