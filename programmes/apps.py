from django.apps import AppConfig


class ProgrammesConfig(AppConfig):
    name = "programmes"
    verbose_name = "Programmes"

    def ready(self):
        from . import signals  # noqa: F401  (connects the receivers)
