"""The core: errors, console, plans, polling, settings, version and the small types every layer shares.

Imports nothing of the package above it (tests/test_layers.py).
"""
