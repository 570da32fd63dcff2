from django.apps import AppConfig


class TracingConfig(AppConfig):
    """The "Truy vết" page. No models: traces read provisioning.history's tables and append to
    its ``trace_audit`` in the same database."""

    name = "backoffice.tracing"
    label = "tracing"
    verbose_name = "Contact tracing"
