"""The admin site shows the ledger read-only: hours move only through the pages and `allocations.ledger`."""

from django.contrib import admin

from .models import Allocation, LedgerAccount, LedgerEntry, LedgerTransaction


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LedgerEntryInline(admin.TabularInline):
    model = LedgerEntry
    fields = ["account", "amount", "effective_at", "recorded_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ["pk", "type", "effective_at", "recorded_at", "actor", "reason"]
    list_filter = ["type"]
    search_fields = ["idempotency_key", "reason", "cause_id"]
    inlines = [LedgerEntryInline]


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ["pk", "kind", "system", "pool", "allocation", "balance"]
    list_filter = ["kind", "system"]


@admin.register(Allocation)
class AllocationAdmin(ReadOnlyAdmin):
    list_display = ["scheduler_account", "title", "pool", "holder", "start_date", "end_date", "state"]
    list_filter = ["state", "pool__system"]
    search_fields = ["scheduler_account", "title"]
