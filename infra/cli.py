"""The `ivadas` console command (subcommands land with the engine issue)."""

from __future__ import annotations

import argparse
import sys

from model_server import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ivadas", description="Industrial Visual Anomaly Detection as a Service"
    )
    parser.add_argument("--version", action="version", version=f"ivadas {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
