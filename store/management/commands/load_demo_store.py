from django.core.management.base import BaseCommand

from store.services import demo_faq_load


class Command(BaseCommand):
    help = "Load the demo store policies (FAQ). Idempotent."

    def handle(self, *args: object, **options: object) -> None:
        self.stdout.write(self.style.SUCCESS(f"Demo FAQ: {demo_faq_load()} entries"))
