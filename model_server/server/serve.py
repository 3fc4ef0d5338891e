"""Start the model server: the `serve` program SageMaker runs in the container, and `ivadas serve`.

SageMaker starts the image as `serve` with the model unpacked in /opt/ml/model (or SM_MODEL_DIR) and
expects port 8080 (or SAGEMAKER_BIND_TO_PORT). Locally, `--endpoint NAME=PATH` hosts several artifacts as
named endpoints in one process.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ivadas_contract.limits import MAX_REQUEST_BYTES
from model_server.server.config import BATCH_WINDOW_MS, MAX_BATCH, MAX_COALESCE, MODEL_LANES, ServerConfig

CONFIG_ENV = "IVADAS_SERVER_CONFIG"
#: A batch transform job's class: its records are raw images, with no per-record header to name it.
CLASS_ENV = "IVADAS_CLASS_NAME"
#: Name of the endpoint an `--artifact` (or /opt/ml/model) is served as; /invocations always reaches it.
DEFAULT_ENDPOINT = "default"


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--artifact", help="model.tar.gz or unpacked folder (default: SM_MODEL_DIR or /opt/ml/model)"
    )
    p.add_argument(
        "--endpoint", action="append", default=[], metavar="NAME=PATH", help="host a named endpoint"
    )
    p.add_argument("--host", default="0.0.0.0")  # SageMaker's container contract: serve on every interface  # nosec B104
    p.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")))
    workers = int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", "1"))
    p.add_argument("--workers", type=int, default=workers, help="processes; each loads the models")
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(os.environ.get("IVADAS_MAX_BODY_BYTES", MAX_REQUEST_BYTES)),
    )
    p.add_argument("--max-batch", type=int, default=MAX_BATCH, help="images per explicit batch pass")
    p.add_argument("--max-coalesce", type=int, default=MAX_COALESCE, help="concurrent requests per pass")
    p.add_argument("--model-lanes", type=int, default=MODEL_LANES, help="forward passes at once")
    p.add_argument("--batch-window-ms", type=float, default=BATCH_WINDOW_MS)
    p.add_argument(
        "--admin", action="store_true", help="local stack: PUT /endpoints/NAME/artifact swaps an artifact"
    )
    p.add_argument("--log-level", default=os.environ.get("IVADAS_LOG_LEVEL", "info"))
    p.add_argument(
        "--class-name",
        default=os.environ.get(CLASS_ENV),
        help=f"class of raw images sent without a class_name attribute (default: ${CLASS_ENV})",
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    endpoints: dict[str, str] = {}
    if args.artifact or not args.endpoint:
        endpoints[DEFAULT_ENDPOINT] = args.artifact or os.environ.get("SM_MODEL_DIR", "/opt/ml/model")
    for spec in args.endpoint:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"serve: --endpoint takes NAME=PATH, got '{spec}'")
        endpoints[name] = path
    return ServerConfig(
        endpoints=endpoints,
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        max_coalesce=args.max_coalesce,
        model_lanes=args.model_lanes,
        batch_window_ms=args.batch_window_ms,
        admin=args.admin,
        default_class=args.class_name,
    )


def app_from_env():
    """uvicorn factory: every worker process builds its own app (and loads its own models)."""
    from model_server.engine.runtime import set_threads
    from model_server.server.app import create_app

    config = ServerConfig.from_json(os.environ[CONFIG_ENV])
    workers = max(1, int(os.environ.get("IVADAS_WORKERS", "1")))
    config.cores = max(1, len(os.sched_getaffinity(0)) // workers)  # each worker process gets its share
    set_threads(config.cores)
    return create_app(config)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    config = config_from_args(args)
    if config.admin and args.workers > 1:
        raise SystemExit("serve: --admin swaps artifacts in one process; use --workers 1")
    os.environ[CONFIG_ENV] = config.to_json()
    os.environ["IVADAS_WORKERS"] = str(args.workers)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name, path in config.endpoints.items():
        logging.getLogger("ivadas.server").info("endpoint %s -> %s", name, path)
    uvicorn.run(
        "model_server.server.serve:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level.lower(),
        access_log=False,
        timeout_keep_alive=75,  # longer than typical client pools keep idle connections
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """The container's `serve` program."""
    parser = argparse.ArgumentParser(prog="serve", description="IVADAS SageMaker inference server")
    add_serve_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # `docker run image serve` with an entrypoint that passes the word on
        argv = argv[1:]
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
