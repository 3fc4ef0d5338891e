"""How every benchmark ends: each missed target printed, then the verdict and the exit code."""

from __future__ import annotations


def conclude(missed: list[str]) -> int:
    """Print each missed target and the verdict; the benchmark's exit code (1 when any target is missed)."""
    for line in missed:
        print(f"MISSED: {line}")
    print("all targets met" if not missed else f"{len(missed)} target(s) missed", flush=True)
    return 1 if missed else 0
