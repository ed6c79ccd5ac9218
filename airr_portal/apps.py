from django.apps import AppConfig


class AirrPortalConfig(AppConfig):
    name = "airr_portal"
    verbose_name = "AIRR Portal"
