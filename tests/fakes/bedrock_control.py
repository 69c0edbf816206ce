"""A local stand-in for the Bedrock control plane's provisioned-throughput API, driven by real boto3.

moto implements none of these calls (DESIGN.md §9). This server speaks the REST-JSON wire of
botocore 1.44's `bedrock` service model, so boto3 parses it unmodified::

    with FakeBedrockControl() as fake:
        client = boto3.client("bedrock", endpoint_url=fake.url, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        arn = client.create_provisioned_model_throughput(
            provisionedModelName="mangaassist-chat-1", modelId="anthropic.claude-3-5-haiku-20241022-v1:0",
            modelUnits=1)["provisionedModelArn"]
        fake.set_status(arn, "InService")

Routes (service model ``bedrock/2023-04-20``):

* ``POST /provisioned-model-throughput`` -> 201 ``{"provisionedModelArn"}`` (CreateProvisionedModelThroughput);
  the same ``clientRequestToken`` returns the first model instead of a second; a name in use is a
  400 ``ValidationException``;
* ``GET / PATCH / DELETE /provisioned-model-throughput/{provisionedModelId}`` (Get / Update / Delete),
  the id being an ARN or a name, URL-encoded in the path; unknown -> 404 ``ResourceNotFoundException``;
  Update takes a new name (model units cannot be changed: the request has no such member);
  Delete of a committed term before its end -> 400 ``ValidationException``;
* ``GET /provisioned-model-throughputs`` (List) with ``statusEquals``, ``nameContains``,
  ``creationTimeAfter/Before``, ``sortOrder``, ``maxResults`` / ``nextToken``.

Errors carry ``x-amzn-ErrorType`` and a ``{"message"}`` body, as AWS sends them; botocore raises
``client.exceptions.<Code>``. A new model is ``Creating`` until the test calls ``set_status``
(``InService`` or ``Failed``): the fake never moves on its own, so a test decides when.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ACCOUNT = "123456789012"
REGION = "us-east-1"
STATUSES = ("Creating", "InService", "Updating", "Failed")
COMMITMENTS = {"OneMonth": timedelta(days=30), "SixMonths": timedelta(days=182)}
_NAME = re.compile(r"([0-9a-zA-Z][_-]?)+")
_ITEM = re.compile(r"^/provisioned-model-throughput/(?P<id>[^/]+)$")


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_iso(raw: str) -> datetime:
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


@dataclass
class FakeProvisionedModel:
    """One provisioned model as the fake holds it (mutate through the fake's methods)."""

    arn: str
    name: str
    model_id: str
    model_units: int
    status: str = "Creating"
    commitment: str = ""
    commitment_expires_at: datetime | None = None
    failure_message: str = ""
    client_request_token: str = ""
    tags: list[dict[str, str]] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    modified_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def model_arn(self) -> str:
        if self.model_id.startswith("arn:"):
            return self.model_id
        return f"arn:aws:bedrock:{REGION}::foundation-model/{self.model_id}"

    def summary(self) -> dict[str, Any]:
        """ProvisionedModelSummary (List); Get adds failureMessage."""
        body: dict[str, Any] = {
            "provisionedModelName": self.name,
            "provisionedModelArn": self.arn,
            "modelArn": self.model_arn(),
            "desiredModelArn": self.model_arn(),
            "foundationModelArn": self.model_arn(),
            "modelUnits": self.model_units,
            "desiredModelUnits": self.model_units,
            "status": self.status,
            "creationTime": _iso(self.created_at),
            "lastModifiedTime": _iso(self.modified_at),
        }
        if self.commitment:
            body["commitmentDuration"] = self.commitment
            if self.commitment_expires_at is not None:
                body["commitmentExpirationTime"] = _iso(self.commitment_expires_at)
        return body


@dataclass(frozen=True)
class RecordedRequest:
    operation: str
    """``CreateProvisionedModelThroughput``, ``GetProvisionedModelThroughput``, ..."""
    method: str
    path: str
    """As received (an ARN in it is still URL-encoded)."""
    provisioned_model_id: str | None
    """URL-decoded id from the path, when the route has one."""
    query: dict[str, str]
    body: dict[str, Any]


@dataclass
class _Fault:
    operation: str
    status: int
    code: str
    message: str
    times: int
    after_effect: bool


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeBedrockControl) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        """Quiet: tests read `fake.requests`, not access logs."""

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._reply(400, {"message": "Malformed JSON"}, "SerializationException")
            return
        split = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        item = _ITEM.match(split.path)
        model_id = unquote(item["id"]) if item else None
        if method == "POST" and split.path == "/provisioned-model-throughput":
            operation = "CreateProvisionedModelThroughput"
        elif method == "GET" and split.path == "/provisioned-model-throughputs":
            operation = "ListProvisionedModelThroughputs"
        elif item and method in {"GET", "PATCH", "DELETE"}:
            operation = {"GET": "Get", "PATCH": "Update", "DELETE": "Delete"}[method] + "ProvisionedModelThroughput"
        else:
            self._reply(404, {"message": f"No route for {method} {split.path}"}, "UnknownOperationException")
            return
        fake = self.server.fake
        fake._record(RecordedRequest(operation, method, self.path, model_id, query, body))
        fault = fake._take_fault(operation)
        if fault is not None and not fault.after_effect:
            self._reply(fault.status, {"message": fault.message}, fault.code)
            return
        if operation in fake.delays:
            time.sleep(fake.delays[operation])
        status, payload, error = getattr(fake, "_" + operation)(model_id=model_id, body=body, query=query)
        if fault is not None:  # the call took effect, but its answer is an error (a lost answer)
            self._reply(fault.status, {"message": fault.message}, fault.code)
            return
        self._reply(status, payload, error)

    def _reply(self, status: int, body: dict[str, Any], error_type: str | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(data)


Reply = tuple[int, dict[str, Any], str | None]


class FakeBedrockControl:
    """A Bedrock control-plane endpoint on 127.0.0.1 holding provisioned models in memory."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.delays: dict[str, float] = {}
        """Seconds an operation waits before it acts (e.g. to hold a create call in flight)."""
        self._models: dict[str, FakeProvisionedModel] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, for boto3's ``endpoint_url``."""
        if self._server is None:
            raise RuntimeError("FakeBedrockControl is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeBedrockControl:
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="fake-bedrock-control", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeBedrockControl:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- what the test controls ----------------------------------------------------------------------

    def models(self) -> list[FakeProvisionedModel]:
        """Every provisioned model that exists now, oldest first."""
        with self._lock:
            return sorted(self._models.values(), key=lambda m: m.created_at)

    def model(self, arn_or_name: str) -> FakeProvisionedModel | None:
        with self._lock:
            return self._find(arn_or_name)

    def set_status(self, arn_or_name: str, status: str, failure_message: str = "") -> None:
        """Move a model on (``InService``, ``Failed``, ...), as AWS would after some minutes."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._lock:
            model = self._find(arn_or_name)
            if model is None:
                raise KeyError(arn_or_name)
            model.status = status
            model.failure_message = failure_message if status == "Failed" else ""
            model.modified_at = datetime.now(timezone.utc)

    def add_model(self, *, name: str, model_id: str = "anthropic.claude-3-5-sonnet-20241022-v2:0",
                  model_units: int = 1, status: str = "InService", commitment: str = "") -> FakeProvisionedModel:
        """A model created outside the code under test (by hand, by a crashed worker, by another team)."""
        with self._lock:
            model = self._new(name=name, model_id=model_id, model_units=model_units, commitment=commitment, token="")
            model.status = status
            return model

    def fail_next(self, operation: str, *, status: int, code: str, message: str = "Simulated failure",
                  times: int = 1, after_effect: bool = False) -> None:
        """The next `times` calls of `operation` answer with this error.

        `after_effect`: the call still takes effect and only its answer is the error (an
        answer lost after AWS acted).
        """
        with self._lock:
            self._faults.append(_Fault(operation, status, code, message, times, after_effect))

    def requests_for(self, operation: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.operation == operation]

    # --- internals --------------------------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_fault(self, operation: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.operation == operation and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _find(self, arn_or_name: str) -> FakeProvisionedModel | None:
        model = self._models.get(arn_or_name)
        if model is None:
            model = next((m for m in self._models.values() if m.name == arn_or_name), None)
        return model

    def _new(self, *, name: str, model_id: str, model_units: int, commitment: str, token: str) -> FakeProvisionedModel:
        suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(12))
        arn = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:provisioned-model/{suffix}"
        expires = datetime.now(timezone.utc) + COMMITMENTS[commitment] if commitment else None
        model = FakeProvisionedModel(arn=arn, name=name, model_id=model_id, model_units=model_units,
                                     commitment=commitment, commitment_expires_at=expires, client_request_token=token)
        self._models[arn] = model
        return model

    @staticmethod
    def _not_found(model_id: str | None) -> Reply:
        return 404, {"message": f"Provisioned model {model_id} not found"}, "ResourceNotFoundException"

    @staticmethod
    def _invalid(message: str) -> Reply:
        return 400, {"message": message}, "ValidationException"

    def _CreateProvisionedModelThroughput(self, *, model_id: str | None, body: dict[str, Any],
                                          query: dict[str, str]) -> Reply:
        name, base_model, units = body.get("provisionedModelName"), body.get("modelId"), body.get("modelUnits")
        commitment, token = body.get("commitmentDuration") or "", body.get("clientRequestToken") or ""
        if not name or not base_model or not isinstance(units, int):
            return self._invalid("provisionedModelName, modelId and modelUnits are required")
        if not _NAME.fullmatch(name) or len(name) > 63:
            return self._invalid(f"Invalid provisionedModelName {name!r}")
        if units < 1:
            return self._invalid("modelUnits must be at least 1")
        if commitment and commitment not in COMMITMENTS:
            return self._invalid(f"Invalid commitmentDuration {commitment!r}")
        with self._lock:
            if token:
                again = next((m for m in self._models.values() if m.client_request_token == token), None)
                if again is not None:
                    return 201, {"provisionedModelArn": again.arn}, None
            if any(m.name == name for m in self._models.values()):
                return self._invalid(f"A provisioned model named {name} already exists")
            model = self._new(name=name, model_id=base_model, model_units=units, commitment=commitment, token=token)
            model.tags = list(body.get("tags") or [])
            return 201, {"provisionedModelArn": model.arn}, None

    def _GetProvisionedModelThroughput(self, *, model_id: str | None, body: dict[str, Any],
                                       query: dict[str, str]) -> Reply:
        with self._lock:
            model = self._find(model_id or "")
            if model is None:
                return self._not_found(model_id)
            reply = model.summary()
            if model.failure_message:
                reply["failureMessage"] = model.failure_message
            return 200, reply, None

    def _UpdateProvisionedModelThroughput(self, *, model_id: str | None, body: dict[str, Any],
                                          query: dict[str, str]) -> Reply:
        with self._lock:
            model = self._find(model_id or "")
            if model is None:
                return self._not_found(model_id)
            if "desiredModelId" in body and not model.model_id.startswith("arn:"):
                return self._invalid("The model of a Provisioned Throughput for a base model cannot be changed")
            new_name = body.get("desiredProvisionedModelName")
            if new_name:
                if any(m.name == new_name and m is not model for m in self._models.values()):
                    return self._invalid(f"A provisioned model named {new_name} already exists")
                model.name = new_name
            if body.get("desiredModelId"):
                model.model_id = body["desiredModelId"]
            model.modified_at = datetime.now(timezone.utc)
            return 200, {}, None

    def _DeleteProvisionedModelThroughput(self, *, model_id: str | None, body: dict[str, Any],
                                          query: dict[str, str]) -> Reply:
        with self._lock:
            model = self._find(model_id or "")
            if model is None:
                return self._not_found(model_id)
            if model.commitment_expires_at is not None and model.commitment_expires_at > datetime.now(timezone.utc):
                return self._invalid(
                    f"You can't delete a Provisioned Throughput with commitment before the commitment term "
                    f"ends ({_iso(model.commitment_expires_at)})")
            del self._models[model.arn]
            return 200, {}, None

    def _ListProvisionedModelThroughputs(self, *, model_id: str | None, body: dict[str, Any],
                                         query: dict[str, str]) -> Reply:
        status = query.get("statusEquals")
        if status is not None and status not in STATUSES:
            return self._invalid(f"Invalid statusEquals {status!r}")
        try:
            page_size = int(query.get("maxResults", "1000"))
            start = int(query.get("nextToken", "0"))
            after = _parse_iso(query["creationTimeAfter"]) if "creationTimeAfter" in query else None
            before = _parse_iso(query["creationTimeBefore"]) if "creationTimeBefore" in query else None
        except ValueError:
            return self._invalid("Invalid maxResults, nextToken or creation time filter")
        with self._lock:
            models = sorted(self._models.values(), key=lambda m: m.created_at,
                            reverse=query.get("sortOrder") == "Descending")
            matching = [
                m for m in models
                if (status is None or m.status == status)
                and (not query.get("nameContains") or query["nameContains"] in m.name)
                and (after is None or m.created_at > after)
                and (before is None or m.created_at < before)
            ]
            page = matching[start:start + page_size]
            reply: dict[str, Any] = {"provisionedModelSummaries": [m.summary() for m in page]}
            if start + page_size < len(matching):
                reply["nextToken"] = str(start + page_size)
            return 200, reply, None
