from django.contrib import admin

from backoffice.gates.models import Gate, VenueList


@admin.register(Gate)
class GateAdmin(admin.ModelAdmin):
    list_display = ("device_id", "venue", "direction", "added")
    search_fields = ("device_id", "venue__venue_id", "venue__name")


@admin.register(VenueList)
class VenueListAdmin(admin.ModelAdmin):
    list_display = ("venue", "kind", "version", "published")
    readonly_fields = ("ids", "version", "published")
