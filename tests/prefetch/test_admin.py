"""PMs edit transitions live in the admin: sums never pass 1, edits reach the next prefetch, proposals
are applied after a confirmation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from prefetch.models import PrefetchOutcome, PrefetchSettings, ProposalStatus, Transition, TransitionProposal
from prefetch.selectors import cart_key
from prefetch.services import prefetch_for_turn, transitions_relearn
from tests.prefetch.test_services import _follow_ups

CHANGELIST = "admin:prefetch_transition_changelist"
PROPOSALS = "admin:prefetch_transitionproposal_changelist"


def _row(from_intent: str, to_intent: str) -> Transition:
    return Transition.objects.get(from_intent=from_intent, to_intent=to_intent)


def _change_form(row: Transition, **changes: Any) -> dict[str, Any]:
    data = {"from_intent": row.from_intent, "to_intent": row.to_intent, "probability": row.probability,
            "prefetch_keys": row.prefetch_keys, "enabled": "on" if row.enabled else ""}
    data.update(changes)
    return {k: v for k, v in data.items() if v != ""}


def _changelist_form(from_intent: str, probabilities: dict[str, float]) -> dict[str, Any]:
    """The changelist's editable rows of one from-intent, as the browser posts them."""
    rows = list(Transition.objects.filter(from_intent=from_intent))  # the admin's ordering
    data: dict[str, Any] = {"form-TOTAL_FORMS": len(rows), "form-INITIAL_FORMS": len(rows),
                            "form-MIN_NUM_FORMS": 0, "form-MAX_NUM_FORMS": 1000, "_save": "Save"}
    for n, row in enumerate(rows):
        data[f"form-{n}-id"] = row.pk
        data[f"form-{n}-probability"] = probabilities.get(row.to_intent, row.probability)
        data[f"form-{n}-enabled"] = "on"
    return data


@pytest.mark.django_db
class TransitionAdminTests:
    def test_the_change_form_refuses_a_sum_over_one(self, admin_client: Client) -> None:
        row = _row("product_discovery", "checkout_help")
        response = admin_client.post(reverse("admin:prefetch_transition_change", args=[row.pk]),
                                     _change_form(row, probability=0.30))
        assert response.status_code == 200
        assert "The transitions from product_discovery would add up to 1.05; at most 1.00." in response.content.decode()
        assert _row("product_discovery", "checkout_help").probability == 0.10

    def test_the_add_form_refuses_a_sum_over_one_and_accepts_one_that_fits(self, admin_client: Client) -> None:
        url = reverse("admin:prefetch_transition_add")
        data = {"from_intent": "recommendation", "to_intent": "promotion", "probability": "0.2",
                "prefetch_keys": ["promotions"], "enabled": "on"}
        assert admin_client.post(url, data).status_code == 200  # 0.85 + 0.20
        assert admin_client.post(url, {**data, "probability": "0.15"}).status_code == 302
        assert _row("recommendation", "promotion").prefetch_keys == ["promotions"]

    def test_changelist_edits_of_one_intent_are_judged_together(self, admin_client: Client) -> None:
        url = reverse(CHANGELIST) + "?from_intent__exact=product_discovery"
        # Lower one and raise another in one save: 0.20 + 0.60 + 0.10 = 0.90, although 0.45 + 0.60 is over 1.
        moved = admin_client.post(url, _changelist_form("product_discovery", {"product_question": 0.20,
                                                                               "recommendation": 0.60}))
        assert moved.status_code == 302
        assert _row("product_discovery", "recommendation").probability == 0.60
        refused = admin_client.post(url, _changelist_form("product_discovery", {"product_question": 0.50,
                                                                                 "checkout_help": 0.20}))
        assert refused.status_code == 200
        assert "add up to at most 1.00: product_discovery (1.30)" in refused.content.decode()
        assert _row("product_discovery", "product_question").probability == 0.20

    def test_the_changelist_says_which_transitions_are_prefetched(self, admin_client: Client) -> None:
        page = admin_client.get(reverse(CHANGELIST)).content.decode()
        summary = page[page.index('id="prefetch-settings-summary"'):]
        assert "<strong>0.25</strong>" in summary[:400] and "deadline 2 s; at most 3 products per key" in summary
        # "Prefetched now", one icon per row: the five transitions at or over 0.25 are.
        assert page.count('alt="True"') == 5 and page.count('alt="False"') == 4

    def test_the_settings_have_one_row_that_cannot_be_deleted_or_added_to(self, admin_client: Client) -> None:
        row = PrefetchSettings.objects.get()
        assert admin_client.get(reverse("admin:prefetch_prefetchsettings_add")).status_code == 403
        assert admin_client.get(reverse("admin:prefetch_prefetchsettings_delete", args=[row.pk])).status_code == 403


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("transitions")
class PmEditTests:
    def test_an_edit_in_the_admin_changes_what_the_next_prefetch_warms(self, admin_client: Client,
                                                                       shown: list[int]) -> None:
        session = "pm-edit-session"

        def cart_prefetched() -> bool:
            cache.delete(cart_key(session))
            result = prefetch_for_turn(intent="product_discovery", product_ids=shown[:3], session_key=session,
                                       conversation_id=str(uuid.uuid4()))
            return cart_key(session) in result.warmed

        assert not cart_prefetched()  # product_discovery -> checkout_help is 0.10, under 0.25
        row = _row("product_discovery", "checkout_help")
        Transition.objects.filter(pk=row.pk).update(probability=0.25)  # behind the cache's back: not seen
        assert not cart_prefetched()
        response = admin_client.post(reverse("admin:prefetch_transition_change", args=[row.pk]),
                                     _change_form(row, probability=0.25))
        assert response.status_code == 302
        assert cart_prefetched()  # the save invalidated the cached configuration on commit

    def test_a_settings_edit_reaches_the_next_prefetch(self, admin_client: Client, shown: list[int]) -> None:
        assert prefetch_for_turn(intent="product_discovery", product_ids=shown[:1], session_key="",
                                 conversation_id="").transitions  # and the configuration is cached now
        row = PrefetchSettings.objects.get()
        switched_off = {"threshold": 0.25, "deadline_seconds": 2.0, "max_products_per_key": 3,  # "enabled" unticked
                        "relearn_min_samples": 30, "relearn_smoothing": 20.0, "relearn_window_days": 28,
                        "speculation_enabled": "on", "speculation_threshold": 0.45, "pregenerate": "on",
                        "speculative_max_output_tokens": 320, "speculative_conversation_token_budget": 6000,
                        "speculative_daily_token_budget": 2_000_000}
        response = admin_client.post(reverse("admin:prefetch_prefetchsettings_change", args=[row.pk]), switched_off)
        assert response.status_code == 302
        result = prefetch_for_turn(intent="product_discovery", product_ids=shown[:3], session_key="",
                                   conversation_id="")
        assert not result.transitions and not result.warmed

    def test_a_pm_turning_pre_generation_off_reaches_the_next_prediction(self, admin_client: Client) -> None:
        from prefetch.selectors import prefetch_config

        assert prefetch_config().speculation.pregenerate  # and the configuration is cached now
        row = PrefetchSettings.objects.get()
        form = {"enabled": "on", "threshold": 0.25, "deadline_seconds": 2.0, "max_products_per_key": 3,
                "relearn_min_samples": 30, "relearn_smoothing": 20.0, "relearn_window_days": 28,
                "speculation_enabled": "on", "speculation_threshold": 0.6, "speculative_max_output_tokens": 320,
                "speculative_conversation_token_budget": 6000, "speculative_daily_token_budget": 2_000_000}
        response = admin_client.post(reverse("admin:prefetch_prefetchsettings_change", args=[row.pk]), form)
        assert response.status_code == 302
        config = prefetch_config()
        assert not config.speculation.pregenerate and config.speculation.threshold == 0.6
        assert config.speculated("recommendation") is None  # 0.50 is under the new threshold


def _select(proposals: list[TransitionProposal], **extra: str) -> dict[str, Any]:
    return {"action": "apply_selected", "_selected_action": [p.pk for p in proposals], **extra}


@pytest.mark.django_db
class ProposalAdminTests:
    @pytest.fixture
    def proposals(self) -> list[TransitionProposal]:
        _follow_ups("product_discovery", "product_question", 30)
        _follow_ups("product_discovery", "faq", 10)
        return transitions_relearn(min_samples=30, smoothing=20).proposals

    def test_applying_asks_for_confirmation_first(self, admin_client: Client,
                                                  proposals: list[TransitionProposal]) -> None:
        page = admin_client.post(reverse(PROPOSALS), _select(proposals))
        assert page.status_code == 200 and "Apply relearned probabilities?" in page.content.decode()
        assert "0.6500" in page.content.decode() and "new" in page.content.decode()
        assert _row("product_discovery", "product_question").probability == 0.45  # nothing changed yet

    def test_confirmed_the_probabilities_change_and_the_proposals_say_who(self, admin_client: Client,
                                                                          proposals: list[TransitionProposal]) -> None:
        response = admin_client.post(reverse(PROPOSALS), _select(proposals, confirm="yes"))
        assert response.status_code == 302
        assert _row("product_discovery", "product_question").probability == 0.65
        assert _row("product_discovery", "faq").prefetch_keys == []
        assert set(TransitionProposal.objects.values_list("status", "applied_by")) == {
            (ProposalStatus.APPLIED, "admin")}

    def test_a_selection_that_would_pass_one_is_refused_whole(self, admin_client: Client,
                                                              proposals: list[TransitionProposal]) -> None:
        raised = [p for p in proposals if p.to_intent in {"product_question", "faq"}]  # 0.65 + 0.30 + 0.10 + 0.1666
        response = admin_client.post(reverse(PROPOSALS), _select(raised, confirm="yes"), follow=True)
        assert "would add up to 1.22" in response.content.decode()
        assert _row("product_discovery", "product_question").probability == 0.45
        assert not TransitionProposal.objects.filter(status=ProposalStatus.APPLIED).exists()

    def test_staff_who_may_not_change_transitions_cannot_apply(self, client: Client,
                                                               proposals: list[TransitionProposal]) -> None:
        analyst = User.objects.create_user("analyst", password="pw", is_staff=True)
        analyst.user_permissions.add(Permission.objects.get(codename="view_transitionproposal"))
        client.force_login(analyst)
        page = client.get(reverse(PROPOSALS)).content.decode()
        assert "apply_selected" not in page
        client.post(reverse(PROPOSALS), _select(proposals, confirm="yes"))
        assert _row("product_discovery", "product_question").probability == 0.45


@pytest.mark.django_db
class OutcomeAdminTests:
    def test_the_hit_rate_by_transition_is_shown(self, admin_client: Client) -> None:
        conversation = uuid.uuid4()
        for hit in (True, True, False, None):
            PrefetchOutcome.objects.create(conversation_id=conversation, from_intent="product_discovery",
                                           to_intent="product_question", predicted=hit is not None, hit=hit)
        page = admin_client.get(reverse("admin:prefetch_prefetchoutcome_changelist")).content.decode()
        table = page[page.index('id="prefetch-hit-rates"'):]
        table = table[:table.index("</table>")]
        assert "<td>product_discovery</td><td>product_question</td><td>4</td><td>3</td>" in table
        assert "<td>3</td><td>2</td>" in table and "67 %" in table
