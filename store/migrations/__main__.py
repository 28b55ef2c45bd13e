"""`python -m store.migrations [--url URL] ALEMBIC-ARGS`: the alembic command line on the master store."""

from __future__ import annotations

import sys

from alembic.config import CommandLine

from store.migrations import config


def main(argv: list[str]) -> None:
    url = None
    if argv[:1] == ["--url"] and len(argv) > 1:
        url, argv = argv[1], argv[2:]
    cli = CommandLine(prog="python -m store.migrations")
    options = cli.parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    cli.run_cmd(config(url), options)


if __name__ == "__main__":
    main(sys.argv[1:])
