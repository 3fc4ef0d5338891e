"""`ivadas inspect` and `ivadas results`: put images into the running stack's inbox and read what came out.

`inspect` is an uploader first, as a camera on a line is: it uploads every image of a folder to
`<line>/<class_name>/<file>` (at `--rate` images a second, or as fast as it can), whatever the results do,
then waits up to `--timeout` for each result item (found by the inspection id the worker derives from bucket,
key and ETag). It shows progress as it goes (uploaded, inspected, pending, retrying) and ends with a table and
a summary that tells images still in flight from those in the dead-letter queue and those lost. `results`
queries the results API as a signed-in user (--user or $IVADAS_USER, password from $IVADAS_PASSWORD or asked).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from infra.local.state import read_state
from infra.uploads import queue_attributes, queued_messages, summarise, upload_and_wait
from ivadas_contract.images import IMAGE_SUFFIXES, has_image_suffix
from model_server.errors import DataError

#: Names of skipped files shown (the rest are counted).
_SAMPLE = 5


def _files(args: argparse.Namespace) -> tuple[list[Path], Path]:
    if args.data_root:
        from model_server.training.datasets import load_split  # numpy and PIL only

        split = load_split(args.data_root, args.class_name)
        files = [s.path for s in split.test if s.path is not None]
        return files, Path(os.path.commonpath([str(p.parent) for p in files])) if files else Path(".")
    if not args.folder:
        raise DataError("give a folder of images or --data-root")
    folder = Path(args.folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    found = sorted(p for p in folder.rglob("*") if p.is_file())
    skipped = [p for p in found if not has_image_suffix(p.name)]
    if skipped:
        names = ", ".join(str(p.relative_to(folder)) for p in skipped[:_SAMPLE])
        more = f" and {len(skipped) - _SAMPLE} more" if len(skipped) > _SAMPLE else ""
        print(f"ivadas inspect: skipped {len(skipped)} file(s) that are not images "
              f"({', '.join(IMAGE_SUFFIXES)}): {names}{more}", file=sys.stderr)  # fmt: skip
    return [p for p in found if has_image_suffix(p.name)], folder


def _status(row: dict, summary: dict) -> str:
    if row["item"]:
        return row["item"]["status"]
    if row["key"] is None:
        return "NOT_UPLOADED"
    if row.get("dead_lettered"):
        return "DEAD_LETTER"
    return "IN_FLIGHT" if not summary["lost"] else "NO_RESULT"


def _closing(summary: dict, total: int, wall: float) -> str:
    """The summary for people: what happened to every image, and what to do about the ones without a
    result."""
    s = summary
    text = (f"{total} images: {s['uploaded']} uploaded, {s['inspected']} inspected ({s['anomalous']} "
            f"defects), {s['rejected']} rejected; {s['in_flight']} still in flight, {s['dead_lettered']} in "
            f"the dead-letter queue, {s['lost']} lost ({wall:.1f} s)")  # fmt: skip
    hints = [
        (summary["not_uploaded"], f"{summary['not_uploaded']} not uploaded (the table says why)"),
        (summary["in_flight"], "still in flight: queued or waiting for a retry; `ivadas results` shows them "
         "as they arrive"),
        (summary["dead_lettered"], "dead-letter queue: `ivadas redrive` inspects them again"),
        (summary["lost"], "lost: no result and no message left to bring one (see the worker logs)"),
    ]  # fmt: skip
    return "\n".join([text, *(f"  {hint}" for n, hint in hints if n)])


def inspect(args: argparse.Namespace) -> int:
    if args.rate is not None and args.rate <= 0:
        raise DataError(f"--rate must be above 0 images a second, got {args.rate}")
    files, folder = _files(args)
    if not files:
        raise DataError(f"no images in {folder}")
    state = read_state(args.state_dir)
    t0 = time.monotonic()
    rows = upload_and_wait(
        files, args.class_name, args.line, args.timeout, state, base=folder, rate=args.rate,
        logs=Path(args.state_dir) / "logs", progress=True,
    )  # fmt: skip
    wall = time.monotonic() - t0
    summary = summarise(rows, queued_messages(queue_attributes(state)))
    print(f"{'file':40} {'status':12} {'verdict':8} {'score':>8} {'latency ms':>10}  reason")
    for r in rows:
        item = r["item"] or {}
        status = _status(r, summary)
        verdict = "" if status != "INSPECTED" else ("DEFECT" if item.get("is_anomaly") else "good")
        score = f"{item['normalized_score']:.3f}" if item.get("normalized_score") is not None else ""
        latency = f"{r['latency_ms']:.0f}" if "latency_ms" in r else ""
        name = str(Path(r["file"]).relative_to(folder))[-40:]
        reason = item.get("reason") or r.get("error", "")
        print(f"{name:40} {status:12} {verdict:8} {score:>8} {latency:>10}  {reason}")
    print(_closing(summary, len(rows), wall), file=sys.stderr)
    summary |= {"wall_seconds": round(wall, 1), "images_per_second": round(len(rows) / wall, 2)}
    print(json.dumps(summary))
    return 0 if summary["uploaded"] == summary["inspected"] + summary["rejected"] == len(rows) else 1


def results(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir)
    query = {"limit": str(args.limit)}
    for name in ("class_name", "line", "reviewed", "since", "until", "next_token"):
        if getattr(args, name, None):
            query[name] = getattr(args, name)
    if args.anomalous:
        query["anomalous"] = "true"
    from infra.local.users import signed_in_headers

    headers = signed_in_headers(state, args.user, None, args.password_stdin)  # a person's route: sign in
    url = f"{state['api_url']}/results?{urllib.parse.urlencode(query)}"
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # the stack's API (or the local shim)  # nosec B310
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        from infra.cli_errors import api_error, describe

        print(f"ivadas results: error: {describe(api_error(err.code, err.read()))}", file=sys.stderr)
        return 2
    print(f"{'time':24} {'class':12} {'status':9} {'verdict':7} {'score':>6}  key")
    for item in doc["items"]:
        verdict = "" if item["status"] != "INSPECTED" else ("DEFECT" if item.get("is_anomaly") else "good")
        score = f"{item['normalized_score']:.3f}" if item.get("normalized_score") is not None else ""
        reason = f"  ({item['reason']})" if item.get("reason") else ""
        when, cls = item["created_at"], item["class_name"][:12]
        print(f"{when:24} {cls:12} {item['status']:9} {verdict:7} {score:>6}  {item['key']}{reason}")
    if doc.get("next_token"):
        print(f"more: --next-token {doc['next_token']}")
    return 0
