"""`{{ seconds|gpu_hours }}`: GPU-seconds from the ledger shown as GPU-hours, with at most two decimals;
`{{ seconds|gpu_hours_not_rounded_away }}` the same, but a positive figure too small for two decimals reads
"less than 0.01", never 0.

`{{ page|brought_forward }}` and `{{ page|carried_forward }}`: a statement page's balance before its first movement
and after its last, so that a statement read page by page adds up on every page.
"""

from django import template

from allocations.ledger import format_gpu_hours

register = template.Library()


@register.filter
def gpu_hours(seconds):
    return format_gpu_hours(seconds)


@register.filter
def gpu_hours_not_rounded_away(seconds):
    # Beside a percentage used that is rounded down (99 % until the award is all used), "Remaining 0" for the
    # last 17 GPU-seconds would read as a contradiction.
    text = format_gpu_hours(seconds)
    return "less than 0.01" if seconds and seconds > 0 and text == "0" else text


@register.filter
def brought_forward(page) -> int:
    first = page[0]
    return first.running_balance - first.amount


@register.filter
def carried_forward(page) -> int:
    return page[-1].running_balance
