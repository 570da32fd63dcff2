from django.contrib import admin

from backoffice.gates.models import Gate, QuarantineEntry, VenueList


@admin.register(Gate)
class GateAdmin(admin.ModelAdmin):
    list_display = ("device_id", "venue", "direction", "added")
    search_fields = ("device_id", "venue__venue_id", "venue__name")


@admin.register(VenueList)
class VenueListAdmin(admin.ModelAdmin):
    list_display = ("venue", "kind", "version", "published")
    readonly_fields = ("ids", "version", "published")


@admin.register(QuarantineEntry)
class QuarantineEntryAdmin(admin.ModelAdmin):
    """Read only: a quarantine is started from a trace and audited; an entry is not edited by hand."""

    list_display = ("venue", "role", "until_s", "reason", "operator", "created")
    list_filter = ("role",)
    search_fields = ("venue__venue_id", "reason")

    def has_add_permission(self, request) -> bool:  # noqa: ANN001 - Django's signature
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001 - Django's signature
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # noqa: ANN001 - Django's signature
        return False
