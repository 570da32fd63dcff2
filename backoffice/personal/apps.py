from django.apps import AppConfig


class PersonalConfig(AppConfig):
    """The people's side: personal passes, health declarations, phone check-in, venue secrets."""

    name = "backoffice.personal"
    label = "personal"
    verbose_name = "Personal QR and health declarations"
