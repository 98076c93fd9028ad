"""`inv config`: the effective settings and where each came from.

``platform`` left empty and ``service_provider`` left ``auto`` are decided when they are used
(steps/image/platform.py, steps/job/service_provider.py): here each shows what the task would use and why (the Nomad
clients, read once within a few seconds, or this machine / the registered job).
"""
from __future__ import annotations

from ..core.settings import Settings


def _clients(settings: Settings) -> tuple[list | None, str]:
    """(the client nodes, "") or (None, why they could not be read): read once for every decided value."""
    from ..core.errors import UserError
    from ..steps.image.platform import CONFIG_TIMEOUT
    from ..steps.job import cluster

    try:
        return cluster.read(settings, timeout=CONFIG_TIMEOUT), ""
    except UserError as exc:
        return None, exc.message


def _platform(settings: Settings, nodes, unreadable: str) -> tuple[str, str]:
    """(value, source) of an empty platform setting, as `inv build` would decide it."""
    from ..steps.image import platform

    choice = platform.wanted(settings, nodes=nodes, unreadable=unreadable)
    return str(choice), choice.source


def _service_provider(settings: Settings, nodes, unreadable: str) -> tuple[str, str]:
    """(value, source) of service_provider auto, as `inv deploy` would decide it."""
    from ..steps.job import service_provider

    choice = service_provider.wanted(settings, nodes=nodes, unreadable=unreadable)
    return choice.value, f"{settings.sources.get('service_provider')}, {choice.source}"


def decided(settings: Settings) -> dict[str, tuple[str, str]]:
    """{key: (value, source)} of the settings that follow the cluster, for those left to it."""
    from ..steps.job import service_provider

    platform_open = not str(settings.platform or "").strip()
    provider_open = service_provider.setting(settings) == service_provider.AUTO
    if not (platform_open or provider_open):
        return {}
    nodes, unreadable = _clients(settings)
    out = {}
    if platform_open:
        out["platform"] = _platform(settings, nodes, unreadable)
    if provider_open:
        out["service_provider"] = _service_provider(settings, nodes, unreadable)
    return out


def show(settings: Settings, as_json: bool = False) -> None:
    from ..core import console

    found = decided(settings)
    if as_json:
        data = {key: {"value": settings.masked(key) if settings.is_secret(key) else settings[key],
                      "source": settings.sources[key]} for key in settings.keys()}
        for key, (value, source) in found.items():
            data[key] = {"value": value, "source": source}
        console.json(data)
        return
    rows = [(section, key, *found[key]) if key in found else (section, key, value, source)
            for section, key, value, source in settings.rows()]
    console.table("Effective settings", ["section", "key", "value", "source"], rows)
