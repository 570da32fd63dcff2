from django.apps import AppConfig


class HistoryConfig(AppConfig):
    """The scan history page. Events live in provisioning.history's tables in the same database."""

    name = "backoffice.history"
    label = "history"
    verbose_name = "Scan history"
