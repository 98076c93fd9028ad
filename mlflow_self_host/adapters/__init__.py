"""Adapters: one outside system each (Nomad's HTTP API and its lock, the Docker engine and the registry,
SSH and the local shell, git, the DNS servers). They import the core only.
"""
