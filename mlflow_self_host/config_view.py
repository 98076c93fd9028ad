"""`inv config`: the effective settings and where each came from."""
from __future__ import annotations

from .settings import Settings


def show(settings: Settings, as_json: bool = False) -> None:
    from . import console

    if as_json:
        console.json({key: {"value": settings.masked(key) if settings.is_secret(key) else settings[key],
                            "source": settings.sources[key]} for key in settings.keys()})
        return
    console.table("Effective settings", ["section", "key", "value", "source"], settings.rows())
