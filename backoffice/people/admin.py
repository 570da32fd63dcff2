from django.contrib import admin

from backoffice.people.models import AuditEntry, OtpChallenge


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "action", "venue_id", "device_id", "answer")
    list_filter = ("action",)
    search_fields = ("venue_id", "device_id")
    readonly_fields = ("at", "actor", "action", "venue_id", "device_id", "detail", "answer")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(OtpChallenge)
class OtpChallengeAdmin(admin.ModelAdmin):
    list_display = ("purpose", "created_s", "tries", "used", "sent")
    exclude = ("code_hash", "client", "phone")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
