"""`inv config`: the effective settings and where each came from.

``platform`` left empty is decided when it is used (image/platform.py): here it shows what `inv build`
would build for and why (the Nomad clients, read within a few seconds, or this machine).
"""
from __future__ import annotations

from .settings import Settings


def _platform(settings: Settings) -> tuple[str, str] | None:
    """(value, source) of an empty platform setting, as `inv build` would decide it."""
    if str(settings.platform or "").strip():
        return None
    from .image import platform

    choice = platform.wanted(settings)
    return str(choice), choice.source


def show(settings: Settings, as_json: bool = False) -> None:
    from . import console

    decided = _platform(settings)
    if as_json:
        data = {key: {"value": settings.masked(key) if settings.is_secret(key) else settings[key],
                      "source": settings.sources[key]} for key in settings.keys()}
        if decided:
            data["platform"] = {"value": decided[0], "source": decided[1]}
        console.json(data)
        return
    rows = [(section, key, decided[0], decided[1]) if key == "platform" and decided else (section, key, value, source)
            for section, key, value, source in settings.rows()]
    console.table("Effective settings", ["section", "key", "value", "source"], rows)
