"""``python -m semcache``: the same command line as the ``semcache`` script."""

from semcache.cli import main

if __name__ == "__main__":
    main(prog_name="semcache")
