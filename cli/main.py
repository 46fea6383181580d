"""`suture`: the command line entry point. `main(argv)` parses, runs a subcommand and returns the exit code;
suture's own errors become one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from suture.cli import demo, edit, evaluate, repair, serve, token
from suture.cli.common import EXIT_USAGE, CliError

SUBCOMMANDS = (edit, evaluate, repair, demo, serve, token)  # each module has add_parser(subparsers) setting `run`


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("suture")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="suture", description="Edit facts in transformer language models, revert them, save the result.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors; keep main() returning a code
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    from suture.editor.errors import SutureError  # imports torch: only once a command runs

    try:
        return args.run(args)
    except (SutureError, CliError) as exc:
        sys.stdout.flush()
        print(f"suture {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"suture {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
