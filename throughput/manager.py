"""The Bedrock control plane (boto3 client "bedrock"): the only module that calls it.

Plain functions over one client per (region, endpoint). They neither read nor write the
database; throughput.services decides, calls these and records what happened. Polling a
creation is a `provisioned_model_get` per beat tick (throughput.tasks), not a loop that holds
a worker for the twenty-odd minutes a creation can take.

Every failure arrives as `ControlPlaneError`. Its `may_have_succeeded` says whether AWS may
have acted anyway (5xx, a lost answer): a create that may have succeeded is resolved later by
name, and retried with the same client request token, so it can never buy twice.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError
from django.conf import settings

# Bedrock's status values (ProvisionedModelStatus).
CREATING = "Creating"
IN_SERVICE = "InService"
UPDATING = "Updating"
FAILED = "Failed"

# botocore's standard mode retries throttling and 5xx with backoff; control-plane calls are
# rare and off the chat path, so a few attempts cost nothing.
CONTROL_MAX_ATTEMPTS = 3
MANAGED_BY_TAG = {"key": "managed-by", "value": "mangaassist-throughput"}

_client_lock = threading.Lock()
_clients: dict[tuple, Any] = {}


@dataclass(frozen=True)
class ProvisionedModel:
    """What the control plane says about one provisioned model (Get and List agree on these)."""

    arn: str
    name: str
    status: str
    model_units: int
    model_arn: str
    commitment: str
    commitment_expires_at: datetime | None
    created_at: datetime | None
    failure_message: str = ""

    def committed_at(self, now: datetime) -> bool:
        """True while a committed term forbids deleting it."""
        if not self.commitment:
            return False
        return self.commitment_expires_at is None or self.commitment_expires_at > now


class ControlPlaneError(Exception):
    """A control-plane call failed; `code` is AWS's error code (or the botocore exception's name)."""

    def __init__(self, message: str, *, code: str, may_have_succeeded: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.may_have_succeeded = may_have_succeeded


class ProvisionedModelNotFound(ControlPlaneError):
    """No provisioned model by that id (never created, or deleted)."""


def control_client() -> Any:
    """The process's "bedrock" client (thread-safe; one per region and endpoint override)."""
    key = (settings.AWS_REGION, settings.BEDROCK_CONTROL_ENDPOINT_URL)
    client = _clients.get(key)
    if client is None:
        with _client_lock:
            client = _clients.get(key)
            if client is None:
                config = Config(
                    retries={"total_max_attempts": CONTROL_MAX_ATTEMPTS, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=30,
                )
                client = boto3.session.Session().client(
                    "bedrock", region_name=settings.AWS_REGION,
                    endpoint_url=settings.BEDROCK_CONTROL_ENDPOINT_URL, config=config)
                _clients[key] = client
    return client


def _error(exc: Exception) -> ControlPlaneError:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code") or "ClientError"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        message = error.get("Message") or str(exc)
        if code == "ResourceNotFoundException":
            return ProvisionedModelNotFound(message, code=code)
        return ControlPlaneError(message, code=code, may_have_succeeded=status >= 500)
    # The request never left: nothing happened on AWS's side.
    never_sent = isinstance(exc, (EndpointConnectionError, ConnectTimeoutError))
    return ControlPlaneError(str(exc), code=type(exc).__name__, may_have_succeeded=not never_sent)


def _model(data: dict[str, Any]) -> ProvisionedModel:
    return ProvisionedModel(
        arn=data["provisionedModelArn"],
        name=data["provisionedModelName"],
        status=data["status"],
        model_units=data.get("modelUnits") or 0,
        model_arn=data.get("modelArn", ""),
        commitment=data.get("commitmentDuration") or "",
        commitment_expires_at=data.get("commitmentExpirationTime"),
        created_at=data.get("creationTime"),
        failure_message=data.get("failureMessage") or "",
    )


def provisioned_model_create(*, name: str, model_id: str, model_units: int, commitment: str,
                             client_request_token: str, purpose: str) -> str:
    """Buy `model_units` of `model_id`; returns the new ARN (status Creating).

    No `commitmentDuration` means no commitment (hourly, deletable at any time). The same
    `client_request_token` twice returns the first call's model instead of a second one.
    """
    arguments: dict[str, Any] = {
        "provisionedModelName": name,
        "modelId": model_id,
        "modelUnits": model_units,
        "clientRequestToken": client_request_token,
        "tags": [MANAGED_BY_TAG, {"key": "purpose", "value": purpose}],
    }
    if commitment:
        arguments["commitmentDuration"] = commitment
    try:
        return control_client().create_provisioned_model_throughput(**arguments)["provisionedModelArn"]
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc) from exc


def provisioned_model_get(*, provisioned_model_id: str) -> ProvisionedModel:
    """One provisioned model by ARN or name; `ProvisionedModelNotFound` once it is deleted."""
    try:
        return _model(control_client().get_provisioned_model_throughput(provisionedModelId=provisioned_model_id))
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc) from exc


def provisioned_models_list(*, name_prefix: str) -> list[ProvisionedModel]:
    """Every provisioned model in the account and region whose name starts with `name_prefix`.

    The API filters on "name contains"; the prefix check is ours (another team's
    "x-mangaassist-..." is not ours to delete).
    """
    models: list[ProvisionedModel] = []
    try:
        pages = control_client().get_paginator("list_provisioned_model_throughputs").paginate(
            nameContains=name_prefix, PaginationConfig={"PageSize": 100})
        for page in pages:
            models.extend(_model(item) for item in page.get("provisionedModelSummaries", []))
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc) from exc
    return [model for model in models if model.name.startswith(name_prefix)]


def provisioned_model_delete(*, provisioned_model_id: str) -> bool:
    """Delete a provisioned model; False when it was already gone (deleting twice is harmless).

    A committed term before its end is refused by AWS: that arrives as `ControlPlaneError`.
    """
    try:
        control_client().delete_provisioned_model_throughput(provisionedModelId=provisioned_model_id)
    except (ClientError, BotoCoreError) as exc:
        error = _error(exc)
        if isinstance(error, ProvisionedModelNotFound):
            return False
        raise error from exc
    return True
