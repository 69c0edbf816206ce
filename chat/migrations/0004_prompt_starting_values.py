"""DESIGN.md §8 starting values: the prompt budget and the page fields kept per intent."""

from django.db import migrations

PAGE_FIELDS = {
    "product_question": ["current_asin", "store_section"],
    "recommendation": ["browsing_history", "store_section"],
    "product_discovery": ["browsing_history", "store_section"],
    "order_tracking": [],
    "return_request": ["current_asin"],
    "faq": ["store_section"],
    "promotion": ["store_section", "cart_asins"],
    "checkout_help": ["cart_asins"],
    "chitchat": [],
}


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    PromptBudget = apps.get_model("chat", "PromptBudget")
    IntentPromptConfig = apps.get_model("chat", "IntentPromptConfig")
    PromptBudget.objects.get_or_create(name="default", defaults={
        "active": True, "system": 200, "retrieved": 350, "conversation": 200, "page": 100, "user": 100, "total": 2000})
    for intent, fields in PAGE_FIELDS.items():
        IntentPromptConfig.objects.get_or_create(intent=intent, defaults={"page_fields": fields})


class Migration(migrations.Migration):
    dependencies = [("chat", "0003_prompt_budget")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
