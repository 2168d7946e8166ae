"""Petrel host tools: the simulated board harness, the VM runner and the `petrel` CLI."""

__version__ = "0.1.0"
