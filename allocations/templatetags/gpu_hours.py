"""`{{ seconds|gpu_hours }}`: GPU-seconds from the ledger shown as GPU-hours, with at most two decimals."""

from django import template

from allocations.ledger import format_gpu_hours

register = template.Library()


@register.filter
def gpu_hours(seconds):
    return format_gpu_hours(seconds)
