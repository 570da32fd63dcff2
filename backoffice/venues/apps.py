from django.apps import AppConfig


class VenuesConfig(AppConfig):
    """Registered venues, who manages them, and access requests."""

    name = "backoffice.venues"
    label = "venues"
    verbose_name = "Venues"
