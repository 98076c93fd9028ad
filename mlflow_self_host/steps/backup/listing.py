"""`inv backup --list`: the backups in backups_path (on the Nomad client, or ./data/backups with --local),
newest first, with the store each is of, when it was taken (UTC, from its name), the version that ran and
its size: one line each on stdout. Reads only."""
from __future__ import annotations

from dataclasses import dataclass

from . import commands
from .names import backup_sort_key, human_size, is_backup_name, store_of, taken_at, version_of
from .target import Target, run


@dataclass(frozen=True)
class Listed:
    name: str
    store: str  # sqlite or postgres
    taken: str  # "2026-12-07 17:42:09 UTC"
    version: str
    size: int


def parse(out: str) -> list[Listed] | None:
    """``commands.listing``'s answer: our backups, newest first (None: the folder is missing)."""
    if out.strip() == "missing":
        return None
    found = []
    for line in out.splitlines():
        size, _, name = line.strip().partition(" ")
        if is_backup_name(name) and size.isdigit():
            found.append(Listed(name, store_of(name), taken_at(name), version_of(name), int(size)))
    return sorted(found, key=lambda b: backup_sort_key(b.name), reverse=True)


def read(target: Target) -> list[Listed] | None:
    result = run(target, commands.listing(target.backups))
    if not result.ok:
        from ...core.errors import UserError

        raise UserError(f"cannot list {target.backups} on {target.label}: "
                        f"{(result.stderr or result.stdout).strip()[-300:] or f'exit {result.exited}'}")
    return parse(result.stdout)


def list_backups(settings, local: bool = False) -> list[Listed]:
    """Print the table (stdout) of backups_path, then of backup_copy_path when set (the nightly backup's second
    folder, on the same client); the backups of backups_path, newest first."""
    from ...core import console

    target = Target.on_this_machine(settings) if local else Target.remote(settings)
    copy = "" if local else str(getattr(settings, "backup_copy_path", "") or "").strip()
    with target:
        found = read(target)
        copies = read(Target(target.shell, target.db, copy, target.where)) if copy else None
    _table(target.backups, target.where, found)
    if copy:
        console.info("")
        _table(copy, f"{target.where}, backup_copy_path: the second folder", copies)
    return found or []


def _table(folder: str, where: str, found: list[Listed] | None) -> None:
    from ...core import console

    if not found:
        console.done(f"no backups in {folder} ({where})" if found is not None
                     else f"no backups: {folder} does not exist ({where})")
        return
    # Plain lines on stdout, one per backup (a table would fold the names when piped); the header on stderr.
    width = max(len(b.name) for b in found)
    console.info(f"backups in {folder} ({where}), newest first:")
    console.info(f"{'backup':<{width}}  {'store':<8}  {'taken':<23}  {'version':<10}  {'size':>9}")
    for b in found:
        console.result(f"{b.name:<{width}}  {b.store:<8}  {b.taken:<23}  {'v' + b.version:<10}  "
                       f"{human_size(b.size):>9}")
