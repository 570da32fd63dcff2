"""Subcommands of `qrgate`, part of the composition root (the only code that builds adapters)."""
