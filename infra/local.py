"""The whole stack on one machine: moto server (S3, SQS, DynamoDB), the model server, the SQS poller that
stands in for Lambda's event source mapping, and an HTTP shim that turns requests into API Gateway events for
the real API handlers and serves `ui/`.

`ivadas local up` starts a supervisor process (this module's `run`) in the background and waits until every
part answers; `ivadas local down` stops it. Names and settings come from template.yaml (Stage=local).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from infra import snapshot
from infra.local_args import DEFAULT_STATE_DIR, add_local_arguments
from infra.template import ACCOUNT, REGION, Stack, load_template

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
UI = ROOT / "ui"
API_MAX_BODY = 6 * 1024 * 1024  # Lambda's synchronous payload limit
log = logging.getLogger("ivadas.local")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen | None = None, ok=lambda status: status < 500
) -> None:
    """Poll `url` until its status passes `ok` (default: any answer but a 5xx); fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, proc.args))} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                status = resp.status
        except urllib.error.HTTPError as err:
            status = err.code
        except OSError:
            status = None
        if status is not None and ok(status):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer as expected within {timeout:.0f} s")


# ------------------------------------------------------------------------------------------ AWS resources


def aws_environment(moto_port: int, model_port: int) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": f"http://127.0.0.1:{model_port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
        "POWERTOOLS_DEV": "false",
    }


def provision(stack: Stack, before_notifications=None) -> dict[str, str]:
    """Create buckets, queues, tables and the inbox notification as the template declares them.

    `before_notifications(names)` runs once everything exists but S3 does not notify yet (a restore must not
    announce old images as new ones).
    """
    import boto3

    s3, sqs, ddb = boto3.client("s3"), boto3.client("sqs"), boto3.client("dynamodb")
    names: dict[str, str] = {}
    for logical, res in stack.resources.items():
        if res["Type"] == "AWS::S3::Bucket":
            names[logical] = stack.ref(logical)
            s3.create_bucket(Bucket=names[logical])
    queues = [k for k, r in stack.resources.items() if r["Type"] == "AWS::SQS::Queue"]
    for logical in sorted(queues, key=lambda k: "RedrivePolicy" in stack.props(k)):  # DLQ first
        props = stack.resolve(stack.props(logical))
        attrs = {
            k: str(props[k])
            for k in (
                "VisibilityTimeout",
                "MessageRetentionPeriod",
                "DelaySeconds",
                "ReceiveMessageWaitTimeSeconds",
            )
            if k in props
        }
        if "RedrivePolicy" in props:
            attrs["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        url = sqs.create_queue(QueueName=props["QueueName"], Attributes=attrs)["QueueUrl"]
        names[logical] = url
    for logical, res in stack.resources.items():
        if res["Type"] != "AWS::DynamoDB::Table":
            continue
        props = stack.resolve(stack.props(logical))
        kwargs = {
            "TableName": props["TableName"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        ddb.create_table(**kwargs)
        if props.get("TimeToLiveSpecification"):
            ddb.update_time_to_live(
                TableName=props["TableName"], TimeToLiveSpecification=props["TimeToLiveSpecification"]
            )
        names[logical] = props["TableName"]
    if before_notifications is not None:
        before_notifications(names)
    for logical, res in stack.resources.items():
        notification = res.get("Properties", {}).get("NotificationConfiguration")
        if res["Type"] == "AWS::S3::Bucket" and notification:
            config = stack.resolve(notification)
            queue_configs = [
                {
                    "QueueArn": q["Queue"],
                    "Events": [q["Event"]],
                    "Filter": {"Key": {"FilterRules": q["Filter"]["S3Key"]["Rules"]}},
                }
                for q in config.get("QueueConfigurations", [])
            ]
            s3.put_bucket_notification_configuration(
                Bucket=names[logical], NotificationConfiguration={"QueueConfigurations": queue_configs}
            )
    return names


# ------------------------------------------------------------------------------------------ handlers


def functions_common() -> ModuleType:
    """functions/common.py as Lambda imports it (top-level `common`): ids and records the worker uses."""
    if str(FUNCTIONS) not in sys.path:
        sys.path.insert(0, str(FUNCTIONS))
    import common

    return common


def load_handler_module(module: str, instance: str) -> ModuleType:
    """A fresh copy of functions/<module>.py: one per emulated Lambda execution environment."""
    functions_common()  # the handlers import `common` from functions/
    spec = importlib.util.spec_from_file_location(
        f"ivadas_fn_{module}_{instance}", FUNCTIONS / f"{module}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@dataclass
class LambdaContext:
    function_name: str
    timeout_s: float

    def __post_init__(self) -> None:
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def sqs_record(message: dict, queue_arn: str) -> dict:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


class Poller:
    """Lambda's SQS event source mapping: receive up to the batch size (within the batching window), call
    the real worker handler, delete only the messages it did not report in batchItemFailures."""

    def __init__(self, stack: Stack, queue_url: str, concurrency: int) -> None:
        event = stack.sqs_event("WorkerFunction")
        self.batch_size = int(event.get("BatchSize", 10))
        self.window_s = float(event.get("MaximumBatchingWindowInSeconds", 0))
        self.timeout_s = float(stack.resolve(stack.props("WorkerFunction").get("Timeout", 60)))
        self.queue_url = queue_url
        self.queue_arn = stack.get_att("InspectionQueue", "Arn")
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), name=f"poller-{i}", daemon=True)
            for i in range(concurrency)
        ]
        self.invocations = 0

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _receive(self, sqs) -> list[dict]:
        messages: list[dict] = []
        deadline = time.monotonic() + self.window_s
        while len(messages) < self.batch_size and not self.stop.is_set():
            wait = 1 if not messages else max(0, int(deadline - time.monotonic()))
            resp = sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            got = resp.get("Messages", [])
            messages.extend(got)
            if not messages or not got or time.monotonic() >= deadline:
                break
        return messages

    def _run(self, index: int) -> None:
        import boto3

        sqs = boto3.client("sqs")
        worker = load_handler_module("worker", str(index))
        while not self.stop.is_set():
            try:
                messages = self._receive(sqs)
            except Exception:  # noqa: BLE001 - moto restarting or shutting down
                time.sleep(0.5)
                continue
            if not messages:
                continue
            event = {"Records": [sqs_record(m, self.queue_arn) for m in messages]}
            try:
                result = worker.handler(event, LambdaContext("ivadas-local-worker", self.timeout_s)) or {}
            except Exception:  # a crashed invocation: every message returns after the visibility timeout
                log.exception("worker invocation failed")
                continue
            self.invocations += 1
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
            done = [m for m in messages if m["MessageId"] not in failed]
            for start in range(0, len(done), 10):
                chunk = done[start : start + 10]
                sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                    ],
                )


# ------------------------------------------------------------------------------------------ API shim


def create_shim(stack: Stack, api_key: str, config: dict):
    """Starlette app: API Gateway REST proxy events for the real handlers, plus ui/ and its config.json."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    cors = stack.resolve(stack.props("Api").get("Cors", {}))
    allow_origin = str(cors.get("AllowOrigin", "'*'")).strip("'")
    modules: dict[str, tuple[ModuleType, threading.Lock]] = {}

    def module(name: str) -> tuple[ModuleType, threading.Lock]:
        if name not in modules:
            modules[name] = (load_handler_module(name, "api"), threading.Lock())
        return modules[name]

    def cors_headers() -> dict:
        return {
            "Access-Control-Allow-Origin": allow_origin,
            "Access-Control-Allow-Headers": str(cors.get("AllowHeaders", "'Content-Type,X-Api-Key'")).strip(
                "'"
            ),
            "Access-Control-Allow-Methods": str(cors.get("AllowMethods", "'GET,POST,OPTIONS'")).strip("'"),
        }

    def make_route(method: str, path: str, module_name: str) -> Route:
        async def endpoint(request: Request) -> Response:
            import asyncio

            if request.method == "OPTIONS":
                return Response(status_code=200, headers=cors_headers())
            if request.headers.get("x-api-key") != api_key:
                return JSONResponse({"message": "Forbidden"}, status_code=403, headers=cors_headers())
            body = await request.body()
            if len(body) > API_MAX_BODY:
                return JSONResponse({"error": "request body over the 6 MB limit"}, status_code=413)
            event = {
                "resource": path,
                "path": request.url.path,
                "httpMethod": request.method,
                "headers": dict(request.headers),
                "multiValueHeaders": {k: request.headers.getlist(k) for k in request.headers},
                "queryStringParameters": dict(request.query_params) or None,
                "multiValueQueryStringParameters": {
                    k: request.query_params.getlist(k) for k in request.query_params
                }
                or None,
                "pathParameters": dict(request.path_params) or None,
                "stageVariables": None,
                "requestContext": {
                    "resourcePath": path,
                    "httpMethod": request.method,
                    "path": f"/local{request.url.path}",
                    "stage": "local",
                    "requestId": str(uuid.uuid4()),
                    "accountId": ACCOUNT,
                    "identity": {
                        "sourceIp": request.client.host if request.client else "127.0.0.1",
                        "apiKey": api_key,
                    },
                },  # fmt: skip
                "body": body.decode("utf-8", errors="replace") if body else None,
                "isBase64Encoded": False,
            }
            mod, lock = module(module_name)

            def call() -> dict:
                with lock:  # one request at a time per handler copy, as one Lambda environment does
                    return mod.handler(event, LambdaContext(f"ivadas-local-{module_name}", 29))

            result = await asyncio.get_running_loop().run_in_executor(None, call)
            raw = result.get("body") or ""
            payload = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
            headers = dict(result.get("headers") or {})
            for k, values in (result.get("multiValueHeaders") or {}).items():
                headers[k] = ", ".join(values)
            return Response(payload, status_code=int(result.get("statusCode", 200)), headers=headers)

        return Route(path, endpoint, methods=[method, "OPTIONS"])  # API Gateway's {param} is Starlette's too

    async def config_json(request: Request) -> Response:
        return JSONResponse(config)

    async def static(request: Request) -> Response:
        rel = request.path_params.get("path") or "index.html"
        target = (UI / rel).resolve()
        if not str(target).startswith(str(UI.resolve())) or not target.is_file():
            return JSONResponse({"error": f"not found: /{rel}"}, status_code=404)
        return FileResponse(target)

    routes = [make_route(m, p, mod) for m, p, mod in stack.api_routes()]
    routes += [Route("/config.json", config_json), Route("/", static), Route("/{path:path}", static)]
    return Starlette(routes=routes)


# ------------------------------------------------------------------------------------------ supervisor


def run(args: argparse.Namespace) -> int:
    """The supervisor: everything in one process tree; SIGTERM stops it all."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    parameters = dict(p.split("=", 1) for p in args.parameter)
    parameters.setdefault("Stage", "local")
    stack = Stack(load_template(), parameters)
    moto_port, model_port = args.moto_port or free_port(), args.model_port or free_port()
    api_port = args.api_port or free_port()
    env = aws_environment(moto_port, model_port)
    os.environ.update(env)
    os.environ.update(stack.function_environment("WorkerFunction"))
    children: list[subprocess.Popen] = []
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True)

    snapshot_dir = state_dir / "snapshot"
    saved_names: dict[str, str] = {}

    def stop_all(*_: object) -> None:
        if saved_names and moto.poll() is None:
            try:
                counts = snapshot.save(snapshot_dir, *_stateful(stack, saved_names))
                log.info(
                    "saved %d objects and %d items to %s", counts["objects"], counts["items"], snapshot_dir
                )
            except Exception:  # noqa: BLE001 - never block shutdown
                log.exception("could not save the local stack's state")
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        (state_dir / "state.json").unlink(missing_ok=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    moto = subprocess.Popen(
        [sys.executable, "-m", "infra.moto_server", "--port", str(moto_port)],
        stdout=open(logs / "moto.log", "ab"),  # noqa: SIM115 - the child process owns the log file
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    children.append(moto)
    endpoint_args = []
    for model, artifact in (("patchcore", args.patchcore), ("softpatch", args.softpatch)):
        if artifact:
            endpoint_args += ["--endpoint", f"{os.environ[model.upper() + '_ENDPOINT']}={artifact}"]
    model_server = subprocess.Popen(
        [sys.executable, "-m", "model_server.serve", "--host", "127.0.0.1", "--port", str(model_port),
         "--log-level", "warning", *endpoint_args],
        stdout=open(logs / "model_server.log", "ab"),  # noqa: SIM115 - the child process owns the log file
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    children.append(model_server)
    try:
        wait_http(f"http://127.0.0.1:{moto_port}/moto-api/", 60, moto)

        def restore(names: dict[str, str]) -> None:
            if not args.fresh and snapshot_dir.exists():
                counts = snapshot.restore(snapshot_dir)
                log.info("restored %d objects and %d items", counts["objects"], counts["items"])

        names = provision(stack, restore)
        saved_names.update(names)
        wait_http(
            f"http://127.0.0.1:{model_port}/ping", 300, model_server, ok=lambda s: s == 200
        )  # 503 while loading
    except Exception as exc:
        log.error("local stack failed to start: %s", exc)
        stop_all()
        return 1
    api_key = secrets.token_urlsafe(24)
    config = {"apiBaseUrl": f"http://127.0.0.1:{api_port}", "apiKey": api_key, "stage": stack.values["Stage"]}
    poller = Poller(stack, names["InspectionQueue"], args.worker_concurrency)
    poller.start()
    if not args.fresh and snapshot_dir.exists():
        common = functions_common()
        sent = snapshot.requeue_uninspected(
            names["InboxBucket"],
            names["ResultsTable"],
            names["InspectionQueue"],
            common.inspection_id,
            common.IMAGE_SUFFIXES,
        )
        log.info("re-announced %d inbox images that had no result yet", sent)
    state = {
        "pid": os.getpid(),
        "moto_port": moto_port,
        "model_port": model_port,
        "model_server_pid": model_server.pid,
        "moto_pid": moto.pid,
        "api_url": f"http://127.0.0.1:{api_port}",
        "ui_url": f"http://127.0.0.1:{api_port}/",
        "api_key": api_key,
        "resources": names,
        "environment": {**env, **stack.function_environment("WorkerFunction")},
    }
    (state_dir / "state.json").write_text(json.dumps(state, indent=2))
    import uvicorn

    uvicorn.run(create_shim(stack, api_key, config), host="127.0.0.1", port=api_port, log_level="warning")
    stop_all()
    return 0


def _stateful(stack: Stack, names: dict[str, str]) -> tuple[list[str], list[str]]:
    """Buckets and tables whose contents survive a restart (the UI bucket is filled from ui/ instead)."""
    buckets = [names[k] for k in ("InboxBucket", "ResultsBucket") if k in names]
    tables = [
        names[k] for k, r in stack.resources.items() if r["Type"] == "AWS::DynamoDB::Table" and k in names
    ]
    return buckets, tables


def read_state(state_dir: str | Path = DEFAULT_STATE_DIR) -> dict:
    path = Path(state_dir) / "state.json"
    if not path.exists():
        raise SystemExit("the local stack is not running: start it with `ivadas local up`")
    return json.loads(path.read_text())


def use_state(state: dict) -> None:
    """Point this process's boto3 clients at the running local stack."""
    os.environ.update(state["environment"])


def up(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    if (state_dir / "state.json").exists():
        try:
            os.kill(read_state(state_dir)["pid"], 0)
            print("the local stack is already running (ivadas local down stops it)", file=sys.stderr)
            return 1
        except OSError:
            (state_dir / "state.json").unlink()
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "infra.local", "--state-dir", str(state_dir),
           "--patchcore", args.patchcore or "", "--softpatch", args.softpatch or "",
           "--worker-concurrency", str(args.worker_concurrency)]  # fmt: skip
    for p in args.parameter:
        cmd += ["--parameter", p]
    if args.api_port:
        cmd += ["--api-port", str(args.api_port)]
    if args.fresh:
        cmd += ["--fresh"]
    log_file = open(state_dir / "supervisor.log", "ab")  # noqa: SIM115 - handed to the supervisor process
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    deadline = time.monotonic() + args.timeout
    while not (state_dir / "state.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"the local stack did not start; see {state_dir / 'supervisor.log'}", file=sys.stderr)
            if proc.poll() is None:
                proc.terminate()
            return 1
        time.sleep(0.3)
    state = read_state(state_dir)
    wait_http(state["api_url"] + "/config.json", 60)
    print(f"local stack up: UI {state['ui_url']}  API {state['api_url']}  (X-Api-Key: {state['api_key']})")
    print(
        f"inbox bucket: {state['resources']['InboxBucket']}, "
        f"moto at {state['environment']['AWS_ENDPOINT_URL']}"
    )
    return 0


def down(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    path = state_dir / "state.json"
    if not path.exists():
        print("the local stack is not running")
        return 0
    pid = json.loads(path.read_text())["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        path.unlink(missing_ok=True)
        return 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    path.unlink(missing_ok=True)
    print("local stack stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local")
    add_local_arguments(parser)
    parser.add_argument("--moto-port", type=int, default=0)
    parser.add_argument("--model-port", type=int, default=0)
    args = parser.parse_args(argv)
    args.patchcore = args.patchcore or None
    args.softpatch = args.softpatch or None
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
