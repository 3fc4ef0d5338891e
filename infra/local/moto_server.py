"""The local stack's AWS: moto's server application (what `ThreadedMotoServer` runs), in a process of its own.

Unlike `python -m moto.server` it runs without Flask's debug mode and without a log line per request (werkzeug
logs warnings and errors only): both cost CPU on the cores the model server shares with it. It also answers
SageMaker's UpdateEndpoint, which moto lacks, keeps training and transform jobs until the local runners run
them (moto_jobs.py), makes DynamoDB writes atomic, and with --journal-dir makes every accepted S3 and DynamoDB
write durable before it answers (moto_extensions.py, journal.py). Routes of its own, outside any AWS API:
POST /_ivadas/journal/restore {"buckets": [...], "tables": [...]} (put the journal's state back, once the
resources exist), POST /_ivadas/journal/compact, GET /_ivadas/journal/status, and
GET /_ivadas/endpoints/changes?after=N&wait=S (the count of SageMaker endpoint changes once it is not N, or
after S seconds: the local stack's endpoint follower waits on it), POST /_ivadas/stacks/finish {"name",
"status", "reason"} (the follower ends the stack stand-in's update it applied). It also
answers the browser's CORS preflight for the JSON-protocol APIs (the UI signs in straight to cognito-idp, as
on AWS): moto routes an OPTIONS without X-Amz-Target to S3, which fails it.
Run: python -m infra.local.moto_server --port PORT [--host 127.0.0.1] [--journal-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import parse_qs

ROUTES = "/_ivadas/journal/"
CHANGES = "/_ivadas/endpoints/changes"
FINISH = "/_ivadas/stacks/finish"
#: the longest an endpoint-changes request waits
MAX_WAIT_S = 300.0
WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


def _json_api_preflight(environ: dict) -> list[tuple[str, str]] | None:
    """CORS headers for a preflight of an X-Amz-Target (JSON protocol) call, as cognito-idp answers it; None
    for any other request (S3 keeps its per-bucket CORS rules)."""
    requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")
    if environ["REQUEST_METHOD"] != "OPTIONS" or not environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"):
        return None
    if "x-amz-target" not in {h.strip().lower() for h in requested.split(",")}:
        return None
    return [
        ("Access-Control-Allow-Origin", environ.get("HTTP_ORIGIN") or "*"),
        ("Access-Control-Allow-Methods", "POST"),
        ("Access-Control-Allow-Headers", requested),
        ("Access-Control-Max-Age", "600"),
        ("Vary", "Origin"),
        ("Content-Length", "0"),
    ]


def _endpoint_changes(environ: dict, start_response: Callable) -> Iterable[bytes]:
    from infra.local.moto_extensions import endpoint_changes

    query = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        after = int(query.get("after", ["-1"])[0])
        wait = min(MAX_WAIT_S, max(0.0, float(query.get("wait", ["0"])[0])))
    except ValueError:
        start_response("400 Bad Request", [("Content-Type", "application/json")])
        return [json.dumps({"error": "after and wait are numbers", "type": "BadRequest"}).encode()]
    generation = endpoint_changes.wait(after, wait)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"generation": generation}).encode()]


def _finish_stack(environ: dict, start_response: Callable) -> Iterable[bytes]:
    from moto.cloudformation.models import cloudformation_backends

    from infra.local.moto_extensions import finish_stack_update
    from infra.template import ACCOUNT, REGION

    body = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
    backend = cloudformation_backends[ACCOUNT][REGION]
    finish_stack_update(backend, body["name"], body["status"], body.get("reason"))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"name": body["name"], "status": body["status"]}).encode()]


def journal_routes(app: WsgiApp, journal: object | None) -> WsgiApp:
    """moto's WSGI application with the journal's routes and the JSON APIs' CORS preflight in front of it."""
    from infra.local import moto_extensions

    def wsgi(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        preflight = _json_api_preflight(environ)
        if preflight is not None:
            start_response("200 OK", preflight)
            return [b""]
        if path == CHANGES and environ["REQUEST_METHOD"] == "GET":
            return _endpoint_changes(environ, start_response)
        if path == FINISH and environ["REQUEST_METHOD"] == "POST":
            return _finish_stack(environ, start_response)
        if not path.startswith(ROUTES):
            return app(environ, start_response)
        action, method = path[len(ROUTES) :], environ["REQUEST_METHOD"]
        if journal is None:
            answer, status = (
                {"error": "this moto runs without a journal", "type": "NotFound"},
                "404 Not Found",
            )
        elif (action, method) == ("restore", "POST"):
            body = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
            answer = moto_extensions.restore(journal, set(body["buckets"]), set(body["tables"]))
            answer["torn_frames"] = journal.torn
            status = "200 OK"
        elif (action, method) == ("compact", "POST"):
            answer, status = {"records": journal.compact()}, "200 OK"
        elif (action, method) == ("status", "GET"):
            answer, status = journal.status(), "200 OK"
        else:
            answer, status = {"error": f"no route {method} {path}", "type": "NotFound"}, "404 Not Found"
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(answer).encode()]

    return wsgi


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--journal-dir", help="make accepted S3 and DynamoDB writes durable here")
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto builds its own URLs with it, as its CLI does
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    from infra.local.journal import Journal
    from infra.local.moto_extensions import install
    from infra.local.moto_jobs import job_routes

    journal = Journal(Path(args.journal_dir)) if args.journal_dir else None
    install(journal)
    app = job_routes(journal_routes(DomainDispatcherApplication(create_backend_app), journal))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="moto", daemon=True).start()
    print(f"moto server on http://{args.host}:{args.port}", flush=True)
    stop.wait()
    server.shutdown()
    if journal is not None:  # every write is durable already; compacting makes the next restore one read
        journal.compact()
        journal.close()


if __name__ == "__main__":
    main()
