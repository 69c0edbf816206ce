from django.apps import AppConfig


class ThroughputConfig(AppConfig):
    name = "throughput"
