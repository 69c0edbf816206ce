"""DESIGN.md §8 starting values: the follow-up transitions and the prefetch settings.

A frozen copy of prefetch.models.STARTING_TRANSITIONS (a migration must not change when the
code does); tests check that the two agree.
"""

from django.db import migrations

TRANSITIONS = (
    ("product_discovery", "product_question", 0.45, ["details", "reviews"]),
    ("product_discovery", "recommendation", 0.30, ["similar"]),
    ("product_discovery", "checkout_help", 0.10, ["cart"]),
    ("recommendation", "product_question", 0.50, ["details", "reviews"]),
    ("recommendation", "product_discovery", 0.20, ["trending"]),
    ("recommendation", "checkout_help", 0.15, ["cart"]),
    ("product_question", "checkout_help", 0.30, ["cart", "promotions"]),
    ("product_question", "recommendation", 0.25, ["similar"]),
    ("product_question", "product_question", 0.20, ["details"]),
)


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    Transition = apps.get_model("prefetch", "Transition")
    PrefetchSettings = apps.get_model("prefetch", "PrefetchSettings")
    for from_intent, to_intent, probability, keys in TRANSITIONS:
        Transition.objects.get_or_create(from_intent=from_intent, to_intent=to_intent,
                                         defaults={"probability": probability, "prefetch_keys": keys, "enabled": True})
    PrefetchSettings.objects.get_or_create(id=1, defaults={
        "enabled": True, "threshold": 0.25, "deadline_seconds": 2.0, "max_products_per_key": 3,
        "auto_apply_relearned": False})


class Migration(migrations.Migration):
    dependencies = [("prefetch", "0001_initial")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
