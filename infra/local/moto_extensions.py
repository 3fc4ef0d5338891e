"""What the local stack's moto needs to behave as AWS does where moto 5.2 falls short.

1. DynamoDB UpdateItem is atomic on AWS; moto's threaded server reads, changes and writes an item without a
   lock, so two concurrent ADDs to one stats counter could lose one (seen: 412 of 413). Updates queue here.

2. UpdateEndpoint for SageMaker's control plane, which has CreateEndpoint but no update.

A deployment is a new endpoint config and an UpdateEndpoint (SageMaker's blue/green update), so the local AWS
must answer it as AWS does: the endpoint keeps its name and ARN, takes the new config, and with
`RetainAllVariantProperties` keeps each same-named variant's instance counts (what auto scaling set). The
update is instant here (AWS goes through `Updating`); the local model server follows the endpoint's config.
Installed only into the local stack's moto process (infra.local.moto_server).
"""

from __future__ import annotations

import functools
import threading

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.dynamodb.models import DynamoDBBackend
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse

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


def _update_endpoint_response(self: SageMakerResponse) -> ActionResult:
    arn = self.sagemaker_backend.update_endpoint(
        endpoint_name=self._get_param("EndpointName"),
        endpoint_config_name=self._get_param("EndpointConfigName"),
        retain=bool(self._get_param("RetainAllVariantProperties", False)),
    )
    return ActionResult({"EndpointArn": arn})


def _atomic(update_item):  # noqa: ANN001, ANN202 - wraps moto's method
    lock = threading.Lock()

    @functools.wraps(update_item)
    def locked(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        with lock:
            return update_item(*args, **kwargs)

    locked.ivadas_atomic = True
    return locked


def install() -> None:
    """Patch moto's classes in this process (each part a no-op once moto does it itself)."""
    if not getattr(DynamoDBBackend.update_item, "ivadas_atomic", False):
        DynamoDBBackend.update_item = _atomic(DynamoDBBackend.update_item)
    if not hasattr(SageMakerResponse, "update_endpoint"):
        SageMakerModelBackend.update_endpoint = _update_endpoint  # type: ignore[attr-defined]
        SageMakerResponse.update_endpoint = _update_endpoint_response  # type: ignore[attr-defined]
