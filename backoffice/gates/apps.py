from django.apps import AppConfig


class GatesConfig(AppConfig):
    """The gates of each venue, their commands, and the venue's deny and allow lists."""

    name = "backoffice.gates"
    label = "gates"
    verbose_name = "Gates"
