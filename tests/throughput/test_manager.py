"""The control-plane manager through real boto3 against the local fake: what AWS receives and answers."""

from __future__ import annotations

import pytest

from tests.fakes.bedrock_control import FakeBedrockControl
from throughput import manager

SONNET = "anthropic.claude-3-5-sonnet-20241022-v2:0"


def create(name: str = "mangaassist-chat-20250602-0900-aaaa1111", *, units: int = 1, commitment: str = "",
           token: str = "token1") -> str:
    return manager.provisioned_model_create(name=name, model_id=SONNET, model_units=units, commitment=commitment,
                                            client_request_token=token, purpose="chat")


class ManagerTests:
    def test_create_sends_units_name_token_and_no_commitment(self, control: FakeBedrockControl) -> None:
        arn = create(units=3)
        [request] = control.requests_for("CreateProvisionedModelThroughput")
        assert request.body["modelUnits"] == 3
        assert request.body["provisionedModelName"] == "mangaassist-chat-20250602-0900-aaaa1111"
        assert request.body["clientRequestToken"] == "token1"
        assert "commitmentDuration" not in request.body  # omitted = no commitment, hourly
        assert {"key": "managed-by", "value": "mangaassist-throughput"} in request.body["tags"]
        model = manager.provisioned_model_get(provisioned_model_id=arn)
        assert (model.status, model.model_units, model.commitment) == (manager.CREATING, 3, "")

    def test_create_with_a_commitment_sends_it(self, control: FakeBedrockControl) -> None:
        arn = create(commitment="OneMonth")
        assert control.requests_for("CreateProvisionedModelThroughput")[0].body["commitmentDuration"] == "OneMonth"
        model = manager.provisioned_model_get(provisioned_model_id=arn)
        assert model.commitment == "OneMonth" and model.commitment_expires_at is not None

    def test_the_same_request_token_twice_buys_once(self, control: FakeBedrockControl) -> None:
        assert create(token="same") == create(token="same")
        assert len(control.models()) == 1

    def test_get_sends_the_arn_url_encoded_in_the_path(self, control: FakeBedrockControl) -> None:
        arn = create()
        manager.provisioned_model_get(provisioned_model_id=arn)
        [request] = control.requests_for("GetProvisionedModelThroughput")
        assert "arn%3Aaws%3Abedrock%3Aus-east-1" in request.path and "%2F" in request.path
        assert request.provisioned_model_id == arn

    def test_list_follows_every_page_and_keeps_only_our_prefix(self, control: FakeBedrockControl) -> None:
        for n in range(205):
            control.add_model(name=f"mangaassist-chat-{n}")
        control.add_model(name="x-mangaassist-chat")  # contains the prefix, does not start with it
        control.add_model(name="search-reranker")
        found = manager.provisioned_models_list(name_prefix="mangaassist-")
        assert len(found) == 205 and all(m.name.startswith("mangaassist-") for m in found)
        requests = control.requests_for("ListProvisionedModelThroughputs")
        assert len(requests) == 3 and all(r.query["nameContains"] == "mangaassist-" for r in requests)

    def test_after_delete_get_answers_not_found(self, control: FakeBedrockControl) -> None:
        arn = create()
        assert manager.provisioned_model_delete(provisioned_model_id=arn) is True
        with pytest.raises(manager.ProvisionedModelNotFound):
            manager.provisioned_model_get(provisioned_model_id=arn)
        assert manager.provisioned_model_delete(provisioned_model_id=arn) is False  # twice is harmless

    def test_a_committed_term_cannot_be_deleted(self, control: FakeBedrockControl) -> None:
        committed = control.add_model(name="mangaassist-committed", commitment="SixMonths")
        with pytest.raises(manager.ControlPlaneError) as raised:
            manager.provisioned_model_delete(provisioned_model_id=committed.arn)
        assert raised.value.code == "ValidationException" and not raised.value.may_have_succeeded
        assert control.model(committed.arn) is not None

    def test_a_refusal_is_definite_and_a_server_error_may_have_acted(self, control: FakeBedrockControl,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
        control.fail_next("CreateProvisionedModelThroughput", status=400, code="ServiceQuotaExceededException",
                          message="No model units are available for this account")
        with pytest.raises(manager.ControlPlaneError) as refused:
            create()
        assert refused.value.code == "ServiceQuotaExceededException" and not refused.value.may_have_succeeded
        # One attempt, so botocore does not retry the 500 (it would, with the same token, in production).
        monkeypatch.setattr(manager, "CONTROL_MAX_ATTEMPTS", 1)
        monkeypatch.setattr(manager, "_clients", {})
        control.fail_next("CreateProvisionedModelThroughput", status=500, code="InternalServerException",
                          after_effect=True)
        with pytest.raises(manager.ControlPlaneError) as lost:
            create(token="lost")
        assert lost.value.code == "InternalServerException" and lost.value.may_have_succeeded
        assert [m.name for m in control.models()] == ["mangaassist-chat-20250602-0900-aaaa1111"]

    def test_the_endpoint_override_is_the_setting(self, control: FakeBedrockControl, settings) -> None:  # type: ignore[no-untyped-def]
        assert manager.control_client().meta.endpoint_url == control.url
        settings.BEDROCK_CONTROL_ENDPOINT_URL = None
        assert manager.control_client().meta.endpoint_url == "https://bedrock.us-east-1.amazonaws.com"
