"""`make demo`: both models trained on a data set, the local stack up with them registered, approved and
deployed, and every held-out test image sent through the S3 inbox; one line per step says what it does and
what comes next.

Work that waits on nothing else runs beside other work where a core would idle: while SoftPatch trains
(on one thread), the local stack starts on the other core, PatchCore is registered and deployed, and the
test images are inspected by it. Each model is evaluated once, by its training (`ivadas train
--report-dir`). A trained artifact whose classes are the ones asked for is reused; delete it to train again.

Run: python -m infra.demo [--data-root elpv] [--classes elpv_mono,elpv_poly] [--out runs/demo]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from infra.local.args import DEFAULT_STATE_DIR
from infra.local.state import read_state

STEPS = 5


class DemoError(RuntimeError):
    """A step failed; the message says which and where its output is."""


def say(step: int, what: str, then: str) -> None:
    print(f"\n[{step}/{STEPS}] {what}\n      next: {then}", flush=True)


def ivadas(*argv: str, log: Path | None = None) -> str:
    """Run an `ivadas` command in this process (one start-up for all of them); its output goes to the
    terminal, or to `log` (and is returned)."""
    from infra.cli import main

    if log is None:
        if main(list(argv)):
            raise DemoError(f"ivadas {' '.join(argv[:2])} failed (its output is above)")
        return ""
    with log.open("w") as out, redirect_stdout(out), redirect_stderr(out):
        code = main(list(argv))
    if code:
        raise DemoError(f"ivadas {' '.join(argv[:2])} failed: see {log}")
    return log.read_text()


def trained(artifact: Path, classes: list[str]) -> bool:
    """Whether `artifact` exists and holds exactly these classes (a rerun reuses it)."""
    if not artifact.exists():
        return False
    from model_server.engine.artifact import load_artifact

    return sorted(load_artifact(artifact).classes) == sorted(classes)


def train_args(args: argparse.Namespace, model: str, out: Path, *extra: str) -> list[str]:
    return ["train", "--data-root", args.data_root, "--classes", args.classes, "--model", model,
            *shlex.split(args.train_args), *extra, "--report-dir", str(out / f"report_{model}"),
            "--out", str(out / f"{model}.tar.gz")]  # fmt: skip


def deploy(model: str, artifact: Path, note: str) -> None:
    """Register the artifact, approve and deploy its version (what the console's Models view lists)."""
    log = artifact.parent / f"register_{model}.log"
    registered = ivadas("register", "--artifact", str(artifact), "--model", model, log=log)
    print(registered.strip(), flush=True)
    version = re.search(rf"\b{model}-\d+\b", registered)[0]  # registered (or already as) patchcore-1: ...
    ivadas("approve", version, "--note", note)
    ivadas("deploy", "--model", model, "--version", version)


def inspect_all(args: argparse.Namespace, classes: list[str], out: Path) -> None:
    for name in classes:
        log = out / f"inspect_{name}.txt"
        text = ivadas("inspect", "--data-root", args.data_root, "--class-name", name, log=log)
        summary = json.loads(text.strip().splitlines()[-1])
        print(f"{name}: {json.dumps(summary)}  (every image: {log})", flush=True)


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    patchcore, softpatch = out / "patchcore.tar.gz", out / "softpatch.tar.gz"
    t0 = time.monotonic()

    say(1, f"Training PatchCore on {', '.join(classes)}: a configuration searched per class from its good "
        "images, then its memory bank, threshold and evaluation report",
        "SoftPatch trains on the same configurations while the local stack starts")  # fmt: skip
    if trained(patchcore, classes):
        print(f"{patchcore} holds these classes already: reused (delete it to train again)")
    else:
        ivadas(*train_args(args, "patchcore", out))

    say(2, "Training SoftPatch on PatchCore's configurations, in the background on one core "
        f"(its output: {out / 'softpatch_train.log'}); starting the local stack on the other",
        "PatchCore is registered, approved and deployed")  # fmt: skip
    background = None
    if trained(softpatch, classes):
        print(f"{softpatch} holds these classes already: reused (delete it to train again)")
    else:
        log = (out / "softpatch_train.log").open("w")
        argv = train_args(
            args, "softpatch", out, "--config-from", str(patchcore), "--threads", "1", "--quiet"
        )
        background = subprocess.Popen(  # noqa: S603 - the project's own CLI  # nosec B603
            [sys.executable, "-m", "infra.cli", *argv], stdout=log, stderr=subprocess.STDOUT
        )
    ivadas("local", "down")
    ivadas("local", "up", "--patchcore", str(patchcore), "--api-port", str(args.api_port), "--fresh")

    say(3, "Registering PatchCore as a model version, approving and deploying it",
        "every held-out test image goes through the S3 inbox")  # fmt: skip
    deploy("patchcore", patchcore, "make demo: the baseline")

    say(4, f"Inspecting the test images of {', '.join(classes)} through inbox, queue, worker and endpoint",
        "SoftPatch, once trained, is registered and deployed as the candidate")  # fmt: skip
    inspect_all(args, classes, out)

    say(5, "Registering, approving and deploying SoftPatch (the candidate beside the baseline)",
        "the console is yours")  # fmt: skip
    if background is not None and background.wait():
        raise DemoError(f"training SoftPatch failed: see {out / 'softpatch_train.log'}")
    deploy("softpatch", softpatch, "make demo: the candidate")

    print(f"\nDone in {(time.monotonic() - t0) / 60:.1f} min.", flush=True)
    print(f"Reports: {out / 'report_patchcore/report.md'}, {out / 'report_softpatch/report.md'}")
    api = read_state(DEFAULT_STATE_DIR)["api_url"]
    print(f"UI and API: {api}/ (still running; 'ivadas local down' stops it)")
    print("Sign in: '.venv/bin/ivadas local add-user NAME --group ml-engineers' (or operators), then the UI "
          "or 'ivadas results --user NAME'")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="elpv", help="MVTec-layout folder, or 'elpv'")
    parser.add_argument("--classes", default="elpv_mono,elpv_poly")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument(
        "--train-args", default="", help="more `ivadas train` options for both, e.g. '--profile fast'"
    )
    args = parser.parse_args(argv)
    try:
        run(args)
    except DemoError as exc:
        print(f"make demo: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
