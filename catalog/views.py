"""The demo store: a listing page and product pages, each embedding the chat."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from .models import Demographic, Product
from .selectors import products_browse

SECTIONS = [(value, label) for value, label in Demographic.choices if value]


def _chat_context(request: HttpRequest) -> dict:
    # Make sure the browser has a session, so its conversation survives reloads.
    if not request.session.session_key:
        request.session.save()
    return {"llm_backend": settings.LLM_BACKEND, "llm_profile": settings.LLM_SIMULATED_PROFILE}


def store(request: HttpRequest) -> HttpResponse:
    section = request.GET.get("section", "")
    if section not in dict(SECTIONS):
        section = ""
    query = request.GET.get("q", "")[:100]
    products = products_browse(section=section, query=query)
    return render(request, "store/index.html", {
        "products": products, "sections": SECTIONS, "section": section, "query": query,
        "page_context": {"store_section": section or "home"}, **_chat_context(request),
    })


def product(request: HttpRequest, sku: str) -> HttpResponse:
    item = get_object_or_404(Product, sku=sku)
    return render(request, "store/product.html", {
        "product": item, "sections": SECTIONS,
        "page_context": {"current_asin": item.sku, "store_section": item.demographic or "home"},
        **_chat_context(request),
    })
