from django.contrib import admin

from .models import DirectorInvitation, FundPool, Programme, System


@admin.register(System)
class SystemAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "cluster_name", "gpu_model", "gpus_per_node", "charge_factor"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["assessors"]


@admin.register(Programme)
class ProgrammeAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["directors"]


@admin.register(FundPool)
class FundPoolAdmin(admin.ModelAdmin):
    """Pools hold no hours themselves: deposits, withdrawals and transfers are on the pool's page."""

    list_display = ["name", "programme", "system", "valid_from", "valid_until", "unused_hours_policy"]
    list_filter = ["system", "programme"]

    def has_delete_permission(self, request, obj=None):
        return False  # the ledger refers to every pool for ever


@admin.register(DirectorInvitation)
class DirectorInvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "programme", "invited_by", "created_at", "accepted_at"]
    readonly_fields = ["programme", "email", "invited_by", "created_at", "accepted_at", "accepted_by"]

    def has_add_permission(self, request):
        return False  # invitations go through the programme page, which sends the email
