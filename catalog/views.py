"""The demo store: a listing page and product pages, each embedding the chat."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from store.models import CartItem
from store.services import demo_orders_ensure

from .models import Demographic, Product
from .selectors import products_browse

SECTIONS = [(value, label) for value, label in Demographic.choices if value]


def _chat_context(request: HttpRequest, page_context: dict) -> dict:
    """What every store page gives the chat: a session (so the conversation survives reloads),
    the page context (section, current item, history, cart) and the backend label."""
    if not request.session.session_key:
        request.session.save()
    session_key = request.session.session_key
    if settings.STORE_DEMO_ORDERS:
        demo_orders_ensure(session_key=session_key)
    history = [sku for sku in request.session.get("browsing_history", []) if sku != page_context.get("current_asin")]
    if page_context.get("current_asin"):
        request.session["browsing_history"] = ([page_context["current_asin"]] + history)[:10]
    page_context = {**page_context, "browsing_history": history[:10],
                    "cart_asins": list(CartItem.objects.filter(session_key=session_key)
                                       .values_list("product__sku", flat=True).distinct()[:20])}
    return {"page_context": page_context, "llm_backend": settings.LLM_BACKEND,
            "llm_profile": settings.LLM_SIMULATED_PROFILE}


def store(request: HttpRequest) -> HttpResponse:
    section = request.GET.get("section", "")
    if section not in dict(SECTIONS):
        section = ""
    query = request.GET.get("q", "")[:100]
    products = products_browse(section=section, query=query)
    return render(request, "store/index.html", {
        "products": products, "sections": SECTIONS, "section": section, "query": query,
        **_chat_context(request, {"store_section": section or "home"}),
    })


def product(request: HttpRequest, sku: str) -> HttpResponse:
    item = get_object_or_404(Product, sku=sku)
    return render(request, "store/product.html", {
        "product": item, "sections": SECTIONS,
        **_chat_context(request, {"current_asin": item.sku, "store_section": item.demographic or "home"}),
    })
