"""The demo store: a listing page and product pages, each embedding the chat."""

import hashlib

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

from mangaassist.cached_config import cached_config
from store.models import CartItem
from store.services import demo_orders_ensure

from .models import Demographic, Product
from .retrieval import catalog_version
from .selectors import products_browse

GRID_TTL = 60  # a listing shows a price or stock change within a minute (a catalog edit: at once)

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
    return render(request, "store/index.html", {
        "grid": _product_grid(section, query), "sections": SECTIONS, "section": section, "query": query,
        **_chat_context(request, {"store_section": section or "home"}),
    })


def product(request: HttpRequest, sku: str) -> HttpResponse:
    item = get_object_or_404(Product, sku=sku)
    return render(request, "store/product.html", {
        "product": item, "sections": SECTIONS,
        **_chat_context(request, {"current_asin": item.sku, "store_section": item.demographic or "home"}),
    })


def _product_grid(section: str, query: str) -> SafeString:
    """The listing's products, rendered once per catalog version: every customer opening the store
    asks for the same page, and rendering it again shares the web process with the chat."""
    key = f"store:grid:{catalog_version()}:{section}:{hashlib.sha1(query.encode()).hexdigest()[:16]}"
    html = cached_config(key, lambda: render_to_string(
        "store/_grid.html", {"products": products_browse(section=section, query=query)}), str, timeout=GRID_TTL)
    return mark_safe(html)  # noqa: S308 - rendered by the template engine, escaped there
