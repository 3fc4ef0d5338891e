"""`make demo`: both models trained on a data set, the local stack up with them registered, approved and
deployed, and every held-out test image sent through the S3 inbox; one line per step says what it does and
what comes next.

Work that waits on nothing else runs side by side where a core would idle: each class trains in a process
of its own, as many at once as there are cores (a training spends stretches on one thread, such as its
Python between the network's passes and its report's figures, that leave a core idle for another class's
training); a class's SoftPatch starts on the core its PatchCore training frees, not once every PatchCore
class is done (on 2 cores the last SoftPatch class otherwise trained alone on one thread for two minutes at
the end); and while SoftPatch trains, the local stack starts, PatchCore is registered and deployed, and the
test images are inspected by it. Each model is evaluated once, by its training (`ivadas train
--report-dir`, one report per class); the classes' artifacts are joined into one per model, as one endpoint
serves every class. A trained artifact whose classes are the ones asked for is reused; delete it to train
again.

Run: python -m infra.demo [--data-root elpv] [--classes elpv_mono,elpv_poly] [--out runs/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from infra.local.args import DEFAULT_STATE_DIR
from infra.local.state import read_state
from ivadas_contract.models import MODELS

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


def _train_class(argv: list[str], log: Path) -> int:
    with log.open("w") as sink:
        return subprocess.run(  # noqa: S603 - the project's own CLI  # nosec B603
            [sys.executable, "-m", "infra.cli", *argv], stdout=sink, stderr=subprocess.STDOUT, check=False
        ).returncode


class Trainings:
    """Every class's `ivadas train` of both models, each in a process of its own, one per core: a class's
    SoftPatch training (on its PatchCore configuration) starts on the core its PatchCore training frees, so
    no core idles while another class still trains, and SoftPatch goes on while the stack starts and the
    test images are inspected. `join(model, artifact)` waits for a model's classes and writes its artifact.
    The classes' own artifacts are steps on the way, never reused: deleting the model's artifact trains every
    class again."""

    def __init__(self, args: argparse.Namespace, classes: list[str], cores: int) -> None:
        self.args, self.classes, self.out = args, classes, Path(args.out)
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        slots = max(1, min(cores, len(classes)))
        self.threads = str(max(1, cores // slots))  # one class alone gets every core
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="train")
        self._running: dict[tuple[str, str], Future] = {}
        self._guard = threading.Lock()
        self._joined: dict[str, str] = {}  # model -> the version of its joined artifact
        self._part_versions: dict[str, str] = {}  # class -> the version of its PatchCore class artifact

    def part(self, model: str, name: str) -> Path:
        return self.out / "classes" / f"{model}_{name}.tar.gz"

    def log(self, model: str, name: str) -> Path:
        return self.out / "logs" / f"train_{model}_{name}.log"

    def start(self, model: str, *extra: str, then_softpatch: bool = False) -> None:
        """Queue `model`'s training of every class; with `then_softpatch`, each class's SoftPatch follows its
        PatchCore training on the same core, configured from it."""
        for name in self.classes:
            self._submit(model, name, list(extra), then_softpatch)

    def _submit(self, model: str, name: str, extra: list[str], then_softpatch: bool) -> None:
        report = self.out / f"report_{model}" / name
        argv = ["train", "--data-root", self.args.data_root, "--classes", name, "--model", model,
                *shlex.split(self.args.train_args), *extra, "--threads", self.threads, "--quiet",
                "--report-dir", str(report), "--out", str(self.part(model, name))]  # fmt: skip

        def train() -> int:
            code = _train_class(argv, self.log(model, name))
            if code == 0 and then_softpatch:
                self._submit("softpatch", name, ["--config-from", str(self.part(model, name))], False)
            return code

        with self._guard:
            self._running[(model, name)] = self._pool.submit(train)

    def join(self, model: str, artifact: Path) -> None:
        with self._guard:
            running = {name: f for (m, name), f in self._running.items() if m == model}
        failed = [name for name in self.classes if name not in running]  # its PatchCore training failed
        for done in as_completed(running.values()):
            name = next(n for n, f in running.items() if f is done)
            if done.result():
                failed.append(name)
                continue
            said = self.log(model, name).read_text().splitlines()  # its summary: backbone, bank, threshold
            lines = [s.strip() for s in said if s.strip().startswith(f"{name}: ") and " bank " in s]
            print(f"{model} {lines[0] if lines else name}", flush=True)
        if failed:
            logs = ", ".join(str(self.log(model, n)) for n in sorted(failed))
            raise DemoError(f"training {model} failed: see {logs}")
        from model_server.engine.artifact import load_artifact, save_artifact

        parts = {name: load_artifact(self.part(model, name)) for name in self.classes}
        models = {name: part.get(name) for name, part in parts.items()}
        if model == "patchcore":
            self._part_versions = {name: part.model_version for name, part in parts.items()}
        else:  # configured from a PatchCore class's own artifact: name the joined one, which is deployed
            for name, m in models.items():
                if (
                    name in self._part_versions
                    and m.card.get("configuration_from") == self._part_versions[name]
                ):
                    m.card["configuration_from"] = self._joined["patchcore"]
        saved = save_artifact(artifact, models)
        self._joined[model] = saved.model_version
        print(f"{artifact}: {saved.model_version}, classes {', '.join(sorted(models))}", flush=True)


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
    cores = len(os.sched_getaffinity(0))
    t0 = time.monotonic()

    trainings = Trainings(args, classes, cores)
    reuse_patchcore, reuse_softpatch = trained(patchcore, classes), trained(softpatch, classes)
    say(1, f"Training PatchCore on {', '.join(classes)}, one class per core: each class's configuration, "
        f"memory bank, threshold and evaluation report; each class's SoftPatch follows on the core its "
        f"PatchCore frees (logs: {out / 'logs'})", "the local stack starts with PatchCore")  # fmt: skip
    if reuse_patchcore:
        print(f"{patchcore} holds these classes already: reused (delete it to train again)")
        if not reuse_softpatch:
            trainings.start("softpatch", "--config-from", str(patchcore))
    else:
        trainings.start("patchcore", then_softpatch=not reuse_softpatch)
        trainings.join("patchcore", patchcore)
    if reuse_softpatch:
        print(f"{softpatch} holds these classes already: reused (delete it to train again)")

    say(2, "Starting the local stack with PatchCore while SoftPatch trains",
        "PatchCore is registered, approved and deployed")  # fmt: skip
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
    if not reuse_softpatch:
        trainings.join("softpatch", softpatch)
    deploy("softpatch", softpatch, "make demo: the candidate")

    print(f"\nDone in {(time.monotonic() - t0) / 60:.1f} min.", flush=True)
    reports = ", ".join(
        str(out / f"report_{model}" / name / "report.md") for model in MODELS for name in classes
    )
    print(f"Reports: {reports}")
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
