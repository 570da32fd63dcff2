from django.contrib import admin

from backoffice.venues.models import AccessRequest, Management, Venue


class ManagementInline(admin.TabularInline):
    model = Management
    extra = 0


@admin.register(Venue)
class VenueAdmin(admin.ModelAdmin):
    list_display = ("venue_id", "name", "registrant_name", "created")
    search_fields = ("venue_id", "name", "full_address")
    readonly_fields = ("venue_id", "record", "created")
    inlines = [ManagementInline]


@admin.register(AccessRequest)
class AccessRequestAdmin(admin.ModelAdmin):
    list_display = ("venue", "kind", "status", "created", "decided")
    list_filter = ("kind", "status")
