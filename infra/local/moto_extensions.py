"""What the local stack's moto needs to behave as AWS does where moto 5.2 falls short.

1. DynamoDB writes are atomic on AWS; moto's threaded server reads, changes and writes an item without a
   lock, so two concurrent ADDs to one stats counter could lose one (seen: 412 of 413), and two conditional
   puts of one idempotency record could both succeed. Item writes queue here, one at a time.

2. UpdateEndpoint for SageMaker's control plane, which has CreateEndpoint but no update; and a count of
   endpoint changes (create, update, delete) that the local stack's follower waits on (`endpoint_changes`),
   so it reacts to a deployment at once and asks nothing while none happens.

A deployment is a new endpoint config and an UpdateEndpoint (SageMaker's blue/green update), so the local AWS
must answer it as AWS does: the endpoint keeps its name and ARN, takes the new config, and with
`RetainAllVariantProperties` keeps each same-named variant's instance counts (what auto scaling set). The
update is instant here (AWS goes through `Updating`); the local model server follows the endpoint's config.
3. SageMaker training and transform jobs that wait to be run, and stop (infra/local/moto_jobs.py).
4. Durability (infra/local/journal.py): every S3 object and DynamoDB item write moto accepts is journalled,
   fsynced, before the answer, and `restore` puts the journal's live state back into a new moto.

4. CreateModel keeps EnableNetworkIsolation (moto records every model as without it), so DescribeModel says
   what SageMaker would run.

5. Id and access tokens live as long as their app client says (IdTokenValidity, AccessTokenValidity in
   TokenValidityUnits, as Cognito issues them): moto 5.2 gives every token an hour (`create_jwt`'s default
   `expires_in`), whatever the client, so the console's refresh could never be tried on a token that expires.
6. UpdateStack of the stack's stand-in (infra.local.provision.create_stand_in_stack): moto has the stack's
   parameters but none of its resources, so an update is accepted as CloudFormation accepts it (SSM values are
   fetched anew, so it is never "no updates"), refused while one is under way, and left UPDATE_IN_PROGRESS
   with a count of endpoint changes: the local stack's endpoint follower applies it to the endpoints as
   CloudFormation would, then ends it (`finish_stack_update`).

Installed only into the local stack's moto process (infra.local.moto_server).
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any
from urllib.parse import parse_qs, urlparse

import xmltodict
from moto.cloudformation.exceptions import ValidationError as StackValidationError
from moto.cloudformation.models import CloudFormationBackend
from moto.cloudformation.responses import CloudFormationResponse
from moto.cognitoidp.models import CognitoIdpUserPool
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.s3.models import s3_backends
from moto.s3.responses import S3Response
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse

from infra.local import moto_jobs
from infra.local.journal import Journal
from infra.template import ACCOUNT, REGION

log = logging.getLogger("ivadas.local.moto")

_KEPT = ("CurrentInstanceCount", "DesiredInstanceCount")


def _update_endpoint(
    self: SageMakerModelBackend, endpoint_name: str, endpoint_config_name: str, retain: bool
) -> str:
    endpoint = self.endpoints.get(endpoint_name)
    if endpoint is None:
        arn = FakeEndpoint.arn_formatter(endpoint_name, self.account_id, self.region_name)
        raise ValidationError(message=f"Could not find endpoint '{arn}'.")
    try:
        config = self.describe_endpoint_config(endpoint_config_name)
    except KeyError:
        raise ValidationError(
            message=f"Could not find endpoint configuration '{endpoint_config_name}'."
        ) from None
    old = {v["VariantName"]: v for v in endpoint.production_variants}
    variants = endpoint._process_production_variants(config["ProductionVariants"])
    if retain:
        for variant in variants:
            kept = old.get(variant["VariantName"], {})
            variant.update({k: kept[k] for k in _KEPT if k in kept})
    endpoint.endpoint_config_name = endpoint_config_name
    endpoint.production_variants = variants
    endpoint.last_modified_time = utcnow()
    endpoint.endpoint_status = "InService"
    return endpoint.arn


def _create_model_response(original):  # noqa: ANN001, ANN202 - wraps moto's method
    @functools.wraps(original)
    def respond(self: SageMakerResponse) -> ActionResult:
        out = original(self)
        model = self.sagemaker_backend.describe_model(self._get_param("ModelName"))
        model.enable_network_isolation = bool(self._get_param("EnableNetworkIsolation", False))
        return out

    respond.ivadas_isolation = True
    return respond


def _update_endpoint_response(self: SageMakerResponse) -> ActionResult:
    arn = self.sagemaker_backend.update_endpoint(
        endpoint_name=self._get_param("EndpointName"),
        endpoint_config_name=self._get_param("EndpointConfigName"),
        retain=bool(self._get_param("RetainAllVariantProperties", False)),
    )
    return ActionResult({"EndpointArn": arn})


class _EndpointChanges:
    """How many times an endpoint was created, updated or deleted, and a wait for the next time."""

    def __init__(self) -> None:
        self.generation = 0
        self.changed = threading.Condition()

    def bump(self) -> None:
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    def wait(self, after: int, timeout: float) -> int:
        """The count once it differs from `after`, or after `timeout` seconds."""
        with self.changed:
            self.changed.wait_for(lambda: self.generation != after, timeout)
            return self.generation


endpoint_changes = _EndpointChanges()


def _counted(method):  # noqa: ANN001, ANN202 - wraps moto's method
    @functools.wraps(method)
    def change(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        out = method(*args, **kwargs)
        endpoint_changes.bump()
        return out

    change.ivadas_counted = True
    return change


#: The Description of the stack stand-in's template (infra.local.provision): the stacks updated as above.
STAND_IN = "ivadas local stand-in: the stack's parameters; the local stack applies its updates"


def _stand_in_update(original):  # noqa: ANN001, ANN202 - wraps moto's response
    @functools.wraps(original)
    def respond(self: CloudFormationResponse) -> ActionResult:
        stack = self.cloudformation_backend.get_stack(self._get_param("StackName"))
        if stack.description != STAND_IN:
            return original(self)
        if stack.status.endswith("_IN_PROGRESS"):
            raise StackValidationError(
                stack.stack_id,
                message=f"Stack:{stack.stack_id} is in {stack.status} state and can not be updated.",
            )
        stack.status, stack.status_reason = "UPDATE_IN_PROGRESS", "User Initiated"
        endpoint_changes.bump()
        return ActionResult({"StackId": stack.stack_id})

    respond.ivadas_stand_in = True
    return respond


def finish_stack_update(backend: CloudFormationBackend, name: str, status: str, reason: str | None) -> None:
    """End a stand-in's update as CloudFormation does: UPDATE_COMPLETE or UPDATE_ROLLBACK_COMPLETE (why)."""
    stack = backend.get_stack(name)
    stack.status, stack.status_reason = status, reason
    endpoint_changes.bump()


#: One lock for every item write (moto's put, update and delete; a transaction's writes nest inside it).
_ITEM_WRITES = threading.RLock()
_journal: Journal | None = None


def _journal_item(backend: DynamoDBBackend, table_name: str, attrs: dict) -> None:
    """Journal the current state of the item whose key attributes are in `attrs` (called under the lock)."""
    table = backend.get_table(table_name)
    key = {a: attrs[a] for a in (table.hash_key_attr, table.range_key_attr) if a and a in attrs}
    item = backend.get_item(table.name, key)
    _journal.append(_journal.item_record(table.name, key, item.to_json()["Attributes"] if item else None))


def _item_write(method, key_argument: str):  # noqa: ANN001, ANN202 - wraps moto's method
    """moto's write, atomic, then (journalling) the item's resulting state made durable before the answer."""

    @functools.wraps(method)
    def write(self, table_name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        with _ITEM_WRITES:
            out = method(self, table_name, *args, **kwargs)
            if _journal is not None and key_argument:
                _journal_item(self, table_name, args[0] if args else kwargs[key_argument])
        return out

    write.ivadas_atomic = True
    return write


def _journal_object(backend: Any, bucket: str, key: str) -> None:
    """Journal an S3 object's current state (its body, ETag and metadata, or that it is gone)."""
    with _journal.locked():
        try:
            fake_key = backend.get_object(bucket, key)
        except Exception:  # noqa: BLE001 - no such bucket or key: nothing is there
            fake_key = None
        _journal.append(_journal.object_record(bucket, key, fake_key))


def _changes_object(method: str, query: dict) -> bool:
    """Whether a successful key request changed the object (not a part upload or a multipart initiation)."""
    if method == "PUT":
        return "uploadId" not in query
    if method == "POST":
        return "uploadId" in query  # completion; ?uploads only initiates
    return method == "DELETE"


def _journalled_key_response(original):  # noqa: ANN001, ANN202 - wraps moto's method
    @functools.wraps(original)
    def respond(self, request, full_url, headers):  # noqa: ANN001, ANN202
        status, response_headers, content = original(self, request, full_url, headers)
        query = parse_qs(urlparse(full_url).query, keep_blank_values=True)
        if _journal is not None and status < 300 and _changes_object(request.method, query):
            _journal_object(
                self.backend, self.parse_bucket_name_from_url(request, full_url), self.parse_key_name()
            )
        return status, response_headers, content

    respond.ivadas_journal = True
    return respond


def _journalled_bucket_response(original):  # noqa: ANN001, ANN202 - wraps moto's method
    """DeleteObjects (POST /bucket?delete) changes many objects at once."""

    @functools.wraps(original)
    def respond(self, request, full_url, headers):  # noqa: ANN001, ANN202
        out = original(self, request, full_url, headers)
        status = out[0] if isinstance(out, tuple) else 200
        if (
            _journal is not None
            and request.method == "POST"
            and status < 300
            and "delete" in parse_qs(urlparse(full_url).query, keep_blank_values=True)
        ):
            objects = xmltodict.parse(self.body)["Delete"].get("Object", [])
            bucket = self.parse_bucket_name_from_url(request, full_url)
            for obj in objects if isinstance(objects, list) else [objects]:
                _journal_object(self.backend, bucket, obj["Key"])
        return out

    respond.ivadas_journal = True
    return respond


def restore(journal: Journal, buckets: set[str], tables: set[str]) -> dict[str, int]:
    """Put the journal's live state of these (already provisioned) buckets and tables into this moto, without
    notifications (an old object is not a new upload), keeping each object's ETag (inspection ids use it)."""
    s3, ddb = s3_backends[ACCOUNT]["aws"], dynamodb_backends[ACCOUNT][REGION]
    counts = {"objects": 0, "items": 0, "missing_blobs": 0}
    for rec in journal.restorable(buckets, tables):
        if rec["k"] == "ddb":
            ddb.get_table(rec["c"]).put_item(rec["item"])
            counts["items"] += 1
            continue
        path = journal.blob_path(rec["blob"])
        if not path.exists():  # never expected: a blob is fsynced before its record
            log.error("blob %s of s3://%s/%s is missing", rec["blob"], rec["c"], rec["key"])
            counts["missing_blobs"] += 1
            continue
        fake_key = s3.put_object(rec["c"], rec["key"], path.read_bytes(), etag=rec["etag"],
                                 disable_notification=True)  # fmt: skip
        fake_key.set_metadata(dict(rec["meta"]))
        counts["objects"] += 1
    return counts


_UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
_TOKEN_NAMES = {"id": "IdToken", "access": "AccessToken"}


def token_lifetime(client_config: dict[str, Any], token_use: str) -> int | None:
    """Seconds an app client's `token_use` ("id", "access") tokens live, from its IdTokenValidity or
    AccessTokenValidity and TokenValidityUnits (Cognito's default unit for both is hours); None when unset."""
    name = _TOKEN_NAMES.get(token_use)
    validity = client_config.get(f"{name}Validity") if name else None
    if validity is None:
        return None
    unit = (client_config.get("TokenValidityUnits") or {}).get(name) or "hours"
    return int(validity) * _UNIT_SECONDS[unit]


def _client_lifetime(original):  # noqa: ANN001, ANN202 - wraps moto's method
    @functools.wraps(original)
    def create_jwt(self, client_id, username, token_use, expires_in=3600, extra_data=None):  # noqa: ANN001, ANN202, PLR0913
        client = self.clients.get(client_id)
        lifetime = token_lifetime(client.extended_config, token_use) if client else None
        return original(self, client_id, username, token_use, lifetime or expires_in, extra_data)

    create_jwt.ivadas_lifetime = True
    return create_jwt


def install(journal: Journal | None = None) -> None:
    """Patch moto's classes in this process (each part a no-op once done); with a journal, writes last."""
    global _journal
    _journal = journal
    if not getattr(DynamoDBBackend.update_item, "ivadas_atomic", False):
        DynamoDBBackend.put_item = _item_write(DynamoDBBackend.put_item, "item_attrs")
        DynamoDBBackend.update_item = _item_write(DynamoDBBackend.update_item, "key")
        DynamoDBBackend.delete_item = _item_write(DynamoDBBackend.delete_item, "key")
        DynamoDBBackend.transact_write_items = _item_write(DynamoDBBackend.transact_write_items, "")
    if not getattr(S3Response.key_response, "ivadas_journal", False):
        S3Response.key_response = _journalled_key_response(S3Response.key_response)
        S3Response.bucket_response = _journalled_bucket_response(S3Response.bucket_response)
    if not getattr(SageMakerResponse.create_model, "ivadas_isolation", False):
        SageMakerResponse.create_model = _create_model_response(SageMakerResponse.create_model)
    if not hasattr(SageMakerResponse, "update_endpoint"):
        SageMakerModelBackend.update_endpoint = _update_endpoint  # type: ignore[attr-defined]
        SageMakerResponse.update_endpoint = _update_endpoint_response  # type: ignore[attr-defined]
    if not getattr(CognitoIdpUserPool.create_jwt, "ivadas_lifetime", False):
        CognitoIdpUserPool.create_jwt = _client_lifetime(CognitoIdpUserPool.create_jwt)
    if not getattr(CloudFormationResponse.update_stack, "ivadas_stand_in", False):
        CloudFormationResponse.update_stack = _stand_in_update(CloudFormationResponse.update_stack)
    moto_jobs.install()
    for name in ("create_endpoint", "update_endpoint", "delete_endpoint"):
        if not getattr(getattr(SageMakerModelBackend, name), "ivadas_counted", False):
            setattr(SageMakerModelBackend, name, _counted(getattr(SageMakerModelBackend, name)))
