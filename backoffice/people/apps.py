from django.apps import AppConfig


class PeopleConfig(AppConfig):
    """Managers and staff (Django users named by their phone), one-time codes, the audit log."""

    name = "backoffice.people"
    label = "people"
    verbose_name = "People"
