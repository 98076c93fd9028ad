"""A doctor row: one check, ✓ or ✗, what was found and the fix (doctor.py prints them; steps/store/health.py
yields its own).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    name: str
    ok: bool
    found: str
    fix: str = ""
