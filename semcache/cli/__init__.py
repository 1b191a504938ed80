"""The ``semcache`` command line: thin click commands (``commands``, and ``tune``) over
``semcache.ops``, what every command runs in (``harness``: one-line errors, opening the cache,
shared options) and their output formatting (``output``). Importing it loads neither instructor
nor the ML stack."""

from semcache.cli.commands import main

__all__ = ["main"]
