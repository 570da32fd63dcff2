"""The health office's staff read declarations in the admin (read-only); venue secrets are never shown."""

from django.contrib import admin

from backoffice.personal.models import HealthDeclaration, PersonalPass


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(HealthDeclaration)
class HealthDeclarationAdmin(ReadOnly):
    list_display = ("id", "declared_s", "risky")
    list_filter = ("risky",)
    readonly_fields = ("profile", "declared_s", "answers", "risky")


@admin.register(PersonalPass)
class PersonalPassAdmin(ReadOnly):
    list_display = ("token_id", "issued_s", "expires_s", "health_declared_s", "revoked_s", "revoked_why")
    list_filter = ("revoked_why",)
    exclude = ("text",)
