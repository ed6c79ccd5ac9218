"""Charts drawn on the server as inline SVG: `{% burn_down_chart report %}` and `{% usage_chart report %}`.

No JavaScript and no style attributes (the Content-Security-Policy forbids both): geometry and colours are SVG
presentation attributes. Each chart is an image with a title and a description (`role="img"`,
`aria-labelledby`), and the page puts a table with the same numbers beside it, so nothing is only in the picture.
"""

from dataclasses import dataclass
from datetime import date, timedelta

from django import template

from allocations.dashboards import AllocationReport, PoolReport
from allocations.ledger import SECONDS_PER_HOUR, format_gpu_hours

register = template.Library()

WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 88, 24, 16, 40
X_TICKS = 6
Y_TICKS = 4


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


class _Frame:
    """Maps days and GPU-seconds to SVG coordinates inside the plotting area."""

    def __init__(self, first: date, last: date, top_seconds: int):
        self.first = first
        self.days = max((last - first).days + 1, 1)
        self.top = _round_up(max(top_seconds, SECONDS_PER_HOUR))

    def x(self, day: date, *, end_of_day: bool = False) -> float:
        offset = (day - self.first).days + (1 if end_of_day else 0)
        return round(LEFT + (WIDTH - LEFT - RIGHT) * offset / self.days, 1)

    def y(self, seconds: int) -> float:
        seconds = max(seconds, 0)
        return round(HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * seconds / self.top, 1)

    def x_ticks(self) -> list[Tick]:
        step = max(self.days // X_TICKS, 1)
        return [
            Tick(
                self.x(self.first + timedelta(days=offset)),
                (self.first + timedelta(days=offset)).strftime("%-d %b"),
            )
            for offset in range(0, self.days, step)
        ][: X_TICKS + 1]

    def y_ticks(self) -> list[Tick]:
        return [
            Tick(self.y(self.top * index // Y_TICKS), format_gpu_hours(self.top * index // Y_TICKS))
            for index in range(Y_TICKS + 1)
        ]


def _round_up(seconds: int) -> int:
    """A tidy top for the axis: 1, 2 or 5 times a power of ten GPU-hours, at or above `seconds`."""
    hours = -(-seconds // SECONDS_PER_HOUR)
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if factor * magnitude >= hours:
                return factor * magnitude * SECONDS_PER_HOUR
        magnitude *= 10


def _frame_context(frame: _Frame, *, chart_id: str, title: str, description: str) -> dict:
    return {
        "chart_id": chart_id,
        "title": title,
        "description": description,
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": HEIGHT - BOTTOM,
        "x_label_y": HEIGHT - BOTTOM + 20,
        "y_label_x": LEFT - 8,
        "x_ticks": frame.x_ticks(),
        "y_ticks": frame.y_ticks(),
    }


@register.inclusion_tag("allocations/charts/chart.html")
def burn_down_chart(report: PoolReport) -> dict:
    """Remaining GPU-hours (capacity − consumed) from the pool's first day, and the forecast as a dashed line."""
    pool, points, forecast = report.pool, report.burn_down, report.forecast
    top = max([point.remaining for point in points] + [point.capacity for point in points] + [0])
    frame = _Frame(pool.valid_from, pool.valid_until, top)
    line = " ".join(f"{frame.x(p.bucket.last, end_of_day=True)},{frame.y(p.remaining)}" for p in points)
    projection = ""
    if points and forecast.outcome in ("runs out", "lasts"):
        start = f"{frame.x(forecast.today, end_of_day=True)},{frame.y(forecast.remaining)}"
        if forecast.outcome == "runs out":
            end = f"{frame.x(forecast.runs_out_on, end_of_day=True)},{frame.y(0)}"
        else:
            end = f"{frame.x(pool.valid_until, end_of_day=True)},{frame.y(forecast.left_at_close)}"
        projection = f"{start} {end}"
    if points:
        first, last = points[0], points[-1]
        description = (
            f"Remaining GPU-hours of {pool.name} from {pool.valid_from:%-d %B %Y} to {pool.valid_until:%-d %B %Y}: "
            f"{format_gpu_hours(first.remaining)} at the end of {first.bucket.last:%-d %B %Y}, "
            f"{format_gpu_hours(last.remaining)} at the end of {last.bucket.last:%-d %B %Y}."
        )
    else:
        description = f"{pool.name} opens on {pool.valid_from:%-d %B %Y}: nothing to draw yet."
    if projection:
        description += " A dashed line projects the current rate of use forward."
    description += " The table below the chart gives the same numbers."
    return {
        **_frame_context(frame, chart_id=report.chart_id, title=f"Burn-down of {pool.name}", description=description),
        "line": line,
        "projection": projection,
        "bars": [],
    }


@register.inclusion_tag("allocations/charts/chart.html")
def usage_chart(report: AllocationReport) -> dict:
    """GPU-hours used in each day (or week) of the allocation, as bars."""
    points = report.usage
    first = points[0].bucket.first if points else report.allocation.start_date
    last = points[-1].bucket.last if points else report.allocation.end_date
    frame = _Frame(first, last, max([point.used for point in points] + [0]))
    bars = []
    for point in points:
        left, right = frame.x(point.bucket.first), frame.x(point.bucket.last, end_of_day=True)
        top = frame.y(point.used)
        bars.append(
            {
                "x": left + 1,
                "y": top,
                "width": max(round(right - left - 2, 1), 1),
                "height": round(HEIGHT - BOTTOM - top, 1),
            }
        )
    period = "day" if all(point.bucket.is_one_day for point in points) else "week"
    allocation = report.allocation
    description = (
        f"GPU-hours used by {allocation.scheduler_account} in each {period} from {first:%-d %B %Y} to "
        f"{last:%-d %B %Y}, {format_gpu_hours(report.used)} in all. The table below the chart gives the same "
        "numbers."
    )
    return {
        **_frame_context(
            frame,
            chart_id=report.chart_id,
            title=f"Usage of {allocation.scheduler_account}",
            description=description,
        ),
        "line": "",
        "projection": "",
        "bars": bars,
    }
