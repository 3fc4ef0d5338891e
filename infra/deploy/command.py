"""`ivadas deploy-stack` (`make deploy`): everything a new AWS account needs for one stage of IVADAS, in
order, idempotent; `--dry-run` prints every AWS call and command it would make and changes nothing
(recorder.py says how it decides what exists)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import boto3

from infra.deploy import image, steps
from infra.deploy.recorder import Recorder
from infra.deploy.steps import Deploy, Request
from infra.lifecycle.context import LOCAL
from infra.template import load_template
from ivadas_contract.models import MODELS
from model_server.errors import IvadasError

ROOT = Path(__file__).resolve().parents[2]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", default="dev", help="stage: part of every name (default: %(default)s)")
    p.add_argument("--region", help="region of the stack, its buckets and endpoints (default: the profile's)")
    p.add_argument("--alarm-email", default="", help="who the alarms notify (AWS mails a confirmation link)")
    p.add_argument("--admin-user", default="", help="the first ML engineer's user name (they add the others)")
    p.add_argument(
        "--admin-email", default="", help="where Cognito mails the first user's temporary password"
    )
    for model in MODELS:
        p.add_argument(
            f"--{model}",
            type=Path,
            default=ROOT / "runs" / "demo" / f"{model}.tar.gz",
            help=f"the {model} artifact a new stage serves first (default: make demo's)",
        )
    p.add_argument("--image-tag", help="model server image tag (default: the commit, plus a hash of changes)")
    p.add_argument(
        "--parameter", action="append", default=[], metavar="NAME=VALUE", help="template parameter"
    )
    p.add_argument("--dry-run", action="store_true", help="print every AWS call and command; change nothing")


def _check_stage(stage: str) -> None:
    """A stage names every resource (template.yaml's Stage rule); `local` is the CLI's name for the local
    stack, so a deployed stage of that name could not be reached."""
    rule = load_template()["Parameters"]["Stage"]["AllowedPattern"]
    if not re.fullmatch(rule, stage):
        raise IvadasError(f"--stage {stage!r}: lowercase letters, digits and '-', 1 to 16 of them")
    if stage == LOCAL:
        raise IvadasError(f"--stage {LOCAL} is the local stack's: give a deployed stage another name")


def request_from_args(args: argparse.Namespace) -> Request:
    _check_stage(args.stage)
    region = args.region or boto3.session.Session().region_name
    if not region:
        raise IvadasError("no region: give --region (or REGION=... to make deploy)")
    if bool(args.admin_user) != bool(args.admin_email):
        raise IvadasError("--admin-user and --admin-email go together")
    try:
        parameters = dict(p.split("=", 1) for p in args.parameter)
    except ValueError:
        raise IvadasError("--parameter takes NAME=VALUE") from None
    return Request(
        stage=args.stage,
        region=region,
        artifacts={model: getattr(args, model) for model in MODELS},
        alarm_email=args.alarm_email,
        admin_user=args.admin_user,
        admin_email=args.admin_email,
        image_tag=args.image_tag or image.default_tag(),
        parameters=parameters,
    )


def deploy(request: Request, aws: Recorder) -> Deploy:
    """Run every step (or, in a dry run, show it); the finished deploy with its stack's outputs."""
    if not aws.dry_run and not aws.has_credentials:
        raise IvadasError(
            "no AWS credentials (aws configure, or AWS_PROFILE); --dry-run shows the plan without"
        )
    d = Deploy(request, aws)
    what = "dry run: nothing is changed" if aws.dry_run else "deploying"
    aws.out(f"ivadas deploy-stack: stage {request.stage}, region {request.region} ({what})")
    for number, (title, step) in enumerate(steps.STEPS, 1):
        aws.out(f"[{number}/{len(steps.STEPS)}] {title}")
        step(d)
    if request.alarm_email:
        aws.out(f"alarms notify {request.alarm_email} once the address confirms AWS's email")
    return d


def run(args: argparse.Namespace) -> int:
    request = request_from_args(args)
    deploy(request, Recorder(request.region, args.dry_run))
    return 0
