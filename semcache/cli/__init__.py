"""The ``semcache`` command line: thin click commands (``commands``) over ``semcache.ops``, with
their output formatting (``output``). Importing it loads neither instructor nor the ML stack."""

from semcache.cli.commands import main

__all__ = ["main"]
