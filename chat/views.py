"""HTTP reads for the widget: a conversation's transcript, for this browser session only."""

import uuid

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from catalog.selectors import product_facts_by_sku

from .selectors import conversation_history as history_select


@never_cache
def conversation_history(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    """The turns as the widget redraws them after a reload: each answer with its product cards
    (the `completed.products` shape of DESIGN.md §4), in the order the answer presented them."""
    session_key = request.session.session_key or ""
    turns = history_select(conversation_id=conversation_id, session_key=session_key) if session_key else None
    if turns is None:
        return JsonResponse({"error": "not_found"}, status=404)
    skus = list(dict.fromkeys(sku for turn in turns if turn.role == "assistant" for sku in turn.products))
    cards = {facts.sku: facts.card() for facts in product_facts_by_sku(skus)}
    return JsonResponse({"conversation": str(conversation_id), "turns": [
        {"role": turn.role, "id": turn.id, "text": turn.text, "status": turn.status,
         "products": [cards[sku] for sku in turn.products if sku in cards] if turn.role == "assistant" else []}
        for turn in turns]})
