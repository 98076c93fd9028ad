"""``inv push`` / ``inv pushlatest``: send ``v{version}`` (and ``latest``) to the registry.

The engine pushes; errors arrive as stream events, not exceptions, so every event is checked. Layers
the registry already has are not sent again (the engine asks first); when the registry's tag already
points at this image, nothing is pushed at all (publish.py: facts, plan, changes).
"""
from __future__ import annotations

from .publish import push_tag


def push(settings, version, dry_run: bool = False) -> str:
    """Push ``{registry}/{image}:v{version}``; returns the manifest digest ("" on a dry run)."""
    return push_tag(settings, version, version.tag, dry_run)


def push_latest(settings, version, dry_run: bool = False) -> str:
    """Tag ``v{version}``'s image ``latest`` and push it (the same image; built first only if missing)."""
    return push_tag(settings, version, "latest", dry_run)
