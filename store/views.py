"""The demo store's cart: a product page's "Add to cart" posts here."""

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from .services import StoreError, cart_add


@require_POST
def cart_add_view(request: HttpRequest) -> HttpResponse:
    if not request.session.session_key:
        request.session.save()
    try:
        volume = int(request.POST.get("volume", "1"))
        cart_add(session_key=request.session.session_key, sku=request.POST.get("sku", ""), volume=volume)
    except (ValueError, StoreError) as exc:
        return HttpResponseBadRequest(str(exc) if isinstance(exc, StoreError) else "volume must be a number")
    return redirect(request.POST.get("next") or "/")
