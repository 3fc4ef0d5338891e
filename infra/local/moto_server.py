"""The local stack's AWS: moto's documented `ThreadedMotoServer`, in a process of its own.

Unlike `python -m moto.server` it runs without Flask's debug mode and without a log line per request (werkzeug
logs warnings and errors only): both cost CPU on the cores the model server shares with it. It also answers
SageMaker's UpdateEndpoint, which moto lacks, and makes DynamoDB updates atomic (moto_extensions.py).
Run: python -m infra.local.moto_server --port PORT [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto builds its own URLs with it, as its CLI does
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from moto.server import ThreadedMotoServer

    from infra.local.moto_extensions import install

    install()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = ThreadedMotoServer(args.host, args.port, verbose=False)
    server.start()
    print(f"moto server on http://{args.host}:{args.port}", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
