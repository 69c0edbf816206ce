"""HTTP reads for the widget: a conversation's transcript, for this browser session only."""

import uuid

from django.http import HttpRequest, JsonResponse

from .selectors import conversation_history as history_select


def conversation_history(request: HttpRequest, conversation_id: uuid.UUID) -> JsonResponse:
    session_key = request.session.session_key or ""
    turns = history_select(conversation_id=conversation_id, session_key=session_key) if session_key else None
    if turns is None:
        return JsonResponse({"error": "not_found"}, status=404)
    return JsonResponse({"conversation": str(conversation_id), "turns": [t.__dict__ for t in turns]})
