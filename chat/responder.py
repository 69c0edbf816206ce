"""The grounded responder: writes an answer from the assembled context alone.

It is what the simulated backend says. Every fact in its answers comes from the
store data assembled for the turn (products, reviews, promotions, orders), so the
whole pipeline, its guardrails and its metrics work end to end without a model.
It is not a model and the UI labels it as simulated.
"""

from __future__ import annotations

import re

from catalog.selectors import ProductFacts

from .assembly import AssembledContext


def _authors(product: ProductFacts) -> str:
    return " and ".join(product.authors[:2]) if product.authors else "an uncredited author"


_SENTENCE_END = re.compile(r"(?<!\s[A-Z])(?<!\b(?:Mr|Dr|St|Ms))[.!?。](?=\s|$)")


def _first_sentence(text: str) -> str:
    """The first sentence, not fooled by initials ("Monkey D. Luffy")."""
    match = _SENTENCE_END.search(text)
    return text[: match.end()].strip() if match else text


def _availability(product: ProductFacts) -> str:
    stock = "in stock" if product.in_stock else "currently out of stock"
    return f"¥{product.price_yen:,} per volume, {stock}"


def _run(product: ProductFacts) -> str:
    if product.volumes and product.status == "completed":
        return f"{product.volumes} volumes, completed"
    if product.volumes:
        return f"{product.volumes} volumes so far"
    return product.status or "volume count not listed"


def _gist(text: str, max_words: int = 18) -> str:
    """The first sentence, cut at a clause when it runs long: list items stay scannable."""
    sentence = _first_sentence(text)
    words = sentence.split()
    if len(words) <= max_words:
        return sentence
    head = " ".join(words[:max_words])
    comma = head.rfind(",")
    return (head[:comma] if comma > len(head) // 2 else head).rstrip(",;:") + "…"


def _product_line(number: int, product: ProductFacts) -> str:
    about = _gist(product.description) if product.description else ", ".join(product.genres)
    return f"{number}. **{product.title}** by {_authors(product)}: {about} ({_run(product)}; {_availability(product)})"


def _promotion_note(context: AssembledContext) -> str:
    if not context.promotions:
        return ""
    promotion = context.promotions[0]
    return f"\n\nCurrent offer: **{promotion.title}**: {promotion.description}"


def write_answer(context: AssembledContext) -> str:
    """The answer for `context.intent`, in Markdown."""
    writer = _WRITERS.get(context.intent, _discovery)
    return writer(context)


def _list_answer(context: AssembledContext, opening: str) -> str:
    lines = [_product_line(n, p) for n, p in enumerate(context.products, start=1)]
    return opening + "\n\n" + "\n".join(lines) + _promotion_note(context) + "\n\nWant details on any of them?"


def _not_found(context: AssembledContext) -> str:
    wanted = ", ".join(f"{k} {v if isinstance(v, str) else '/'.join(v)}" for k, v in context.filters.items())
    scope = f" ({wanted})" if wanted else ""
    return (f"I couldn't find a series in our catalog that matches that{scope}. "
            "Could you tell me a title, an author or a genre you enjoy?")


def _recommendation(context: AssembledContext) -> str:
    if not context.products:
        return _not_found(context)
    if context.seed:
        kind = f"{context.seed.demographic} " if context.seed.demographic else ""
        opening = f"If you enjoyed **{context.seed.title}**, these {kind}series share a lot of what makes it fun:"
    else:
        opening = "Here are a few series I'd recommend from our catalog:"
    return _list_answer(context, opening)


def _discovery(context: AssembledContext) -> str:
    if not context.products:
        return _not_found(context)
    wanted = " ".join(v if isinstance(v, str) else " / ".join(v) for v in context.filters.values())
    opening = f"Here are some {wanted} series we carry:" if wanted else "Here is what I found in our catalog:"
    return _list_answer(context, opening)


def _product_question(context: AssembledContext) -> str:
    product = context.focus
    if product is None:
        return ("Which series do you mean? Tell me its title (English or Japanese) or pick one from the list above, "
                "and I'll give you the details.")
    parts = [f"**{product.title}**"]
    if product.title_ja and product.title_ja != product.title:
        parts[0] += f" ({product.title_ja})"
    parts[0] += f" is by {_authors(product)}"
    if product.publisher:
        parts[0] += f", published by {product.publisher}"
    parts[0] += "."
    if product.description:
        parts.append(product.description)
    years = f"{product.start_year}–{product.end_year or 'present'}" if product.start_year else ""
    parts.append(f"It runs {_run(product)}{f' ({years})' if years else ''}.")
    volume = context.entities.volume
    if volume and product.volumes and volume > product.volumes:
        parts.append(f"Volume {volume} isn't out yet: the series has {product.volumes} volumes so far.")
    elif volume:
        parts.append(f"Volume {volume} is {_availability(product)}.")
    else:
        stock = "in stock" if product.in_stock else "currently out of stock"
        parts.append(f"Each volume costs ¥{product.price_yen:,}, and it is {stock}.")
    review = context.reviews.get(product.id)
    if review:
        parts.append(f"Readers rate it {review.average_rating:.1f}/5 ({review.review_count} reviews): {review.summary}")
    return " ".join(parts) + _promotion_note(context)


def _promotion(context: AssembledContext) -> str:
    if not context.promotions:
        return "There are no promotions running right now. Our prices are listed per volume on each product page."
    lines = [f"- **{p.title}** ({p.discount_percent}% off): {p.description}" for p in context.promotions]
    answer = "These offers are running now:\n\n" + "\n".join(lines)
    if context.products:
        answer += "\n\nSeries that qualify include " + ", ".join(f"**{p.title}**" for p in context.products) + "."
    return answer


def _facts(context: AssembledContext, prefix: str) -> list[str]:
    return [value for key, value in context.store.items() if key.startswith(prefix)]


def _policy_text(line: str) -> str:
    return line.split("): ", 1)[1] if line.startswith("Policy (") else line


def _order_tracking(context: AssembledContext) -> str:
    orders = _facts(context, "order")
    if not orders:
        return "Please give me your order number (it looks like MA-12345) and I'll check its status."
    return "Here is what I see:\n\n" + "\n".join(f"- {line}" for line in orders)


def _return_request(context: AssembledContext) -> str:
    orders = _facts(context, "order")
    policy = _facts(context, "policy")
    if not orders:
        ask = "What is your order number (like MA-12345), and which volume would you like to return?"
        return (_policy_text(policy[0]) + "\n\n" + ask) if policy else "I can help with a return. " + ask
    answer = "\n".join(f"- {line}" for line in orders)
    if policy:
        answer += "\n\n" + _policy_text(policy[0])
    return answer + "\n\nShall I start the return for you?"


def _checkout_help(context: AssembledContext) -> str:
    parts = _facts(context, "cart") + [_policy_text(p) for p in _facts(context, "policy")]
    if not parts:
        parts = ["Add volumes from any product page; your cart shows the subtotal and discounts before you pay."]
    return " ".join(parts) + _promotion_note(context)


def _faq(context: AssembledContext) -> str:
    policies = [_policy_text(p) for p in _facts(context, "policy")]
    if not policies:
        return ("I don't have a store policy answer for that. Could you rephrase, "
                "or ask about shipping, returns, payment or your account?")
    return " ".join(policies[:1]) + (f"\n\nAlso: {policies[1]}" if len(policies) > 1 else "")


def _chitchat(context: AssembledContext) -> str:
    return ("Hello! I'm MangaAssist, the store's shopping assistant. I can recommend series, answer questions "
            "about titles, prices and stock, and help with orders, returns and checkout.")


_WRITERS = {
    "recommendation": _recommendation, "product_discovery": _discovery, "product_question": _product_question,
    "promotion": _promotion, "order_tracking": _order_tracking, "return_request": _return_request,
    "checkout_help": _checkout_help, "faq": _faq, "chitchat": _chitchat,
}
