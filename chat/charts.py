"""Server-side SVG chart geometry for the admin dashboard: no JavaScript, no chart library.

Functions here turn numbers into coordinates; templates/admin/dashboard/ draws them. Every chart
keeps its rows so the template can print a data table beside the drawing (screen readers, print).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

WIDTH = 720
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 20, 44  # margins around the plot area, in SVG units
MAX_X_LABELS = 12


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Reference:
    """A threshold drawn across the plot: the alarm (red, dashed) or the target (green, dotted)."""

    kind: str  # "alarm" or "target"
    label: str
    position: float  # y for line charts, x for horizontal bars, x for the histogram boundary
    # Which side of a vertical line its label sits on, so two close thresholds do not overprint.
    anchor: str = "start"


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    value: float
    text: str  # what a tooltip and the data table say about it


@dataclass(frozen=True)
class Series:
    key: str  # "p50", "p95", ...; also the CSS class that styles the line
    name: str
    points: list[Point]
    # One "x,y x,y ..." string per run of consecutive points: an hour without answers breaks the line.
    segments: list[str]


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: float
    value_text: str
    over: bool = False  # past the alarm threshold

    @property
    def text(self) -> str:
        return f"{self.label}: {self.value_text}"

    @property
    def middle_y(self) -> float:
        """Baseline for a label centred on a horizontal bar."""
        return _r(self.y + self.height / 2 + 4)

    @property
    def end_x(self) -> float:
        return _r(self.x + self.width + 6)


@dataclass(frozen=True)
class Chart:
    kind: str  # "lines" (over hours), "columns" (a histogram) or "bars" (horizontal, one per row)
    slug: str
    title: str
    description: str
    width: int
    height: int
    plot_left: float
    plot_top: float
    plot_right: float
    plot_bottom: float
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    # The data table: column headings and rows of already formatted cells.
    table_head: list[str] = field(default_factory=list)
    table_rows: list[list[str]] = field(default_factory=list)
    empty: bool = False

    @property
    def y_label_x(self) -> float:
        return self.plot_left - 8

    @property
    def x_label_y(self) -> float:
        return self.plot_bottom + 18

    @property
    def centre(self) -> tuple[float, float]:
        return _r((self.plot_left + self.plot_right) / 2), _r((self.plot_top + self.plot_bottom) / 2)


def nice_axis(value: float, *, most: int = 5, whole: bool = False) -> tuple[float, int]:
    """A round top for an axis reaching `value`, and how many equal steps to divide it in.

    Steps are 1, 2, 2.5 or 5 x 10^k and at most `most` of them: 0-2,500 in steps of 500, not 625.
    `whole`: the axis counts things, so a step is never a fraction (nor 2.5).
    """
    if value <= 0:
        return 1.0, 4
    magnitude = 10 ** math.floor(math.log10(value / most))
    if whole:
        magnitude = max(magnitude, 1)
    for factor in (1, 2, 2.5, 5, 10):
        if whole and factor == 2.5 and magnitude == 1:
            continue
        step = factor * magnitude
        steps = math.ceil(value / step - 1e-9)
        if steps <= most:
            return step * steps, max(steps, 1)
    return 10 * magnitude * most, most  # pragma: no cover - the loop always returns


def _r(value: float) -> float:
    return round(value, 1)


def _side_by_side(references: list[Reference]) -> list[Reference]:
    """Vertical threshold lines: the leftmost label to the left of its line, the others to the right."""
    ordered = sorted(references, key=lambda ref: ref.position)
    return [Reference(ref.kind, ref.label, ref.position, "end" if index == 0 and len(ordered) > 1 else "start")
            for index, ref in enumerate(ordered)]


def line_chart(*, slug: str, title: str, description: str, x_labels: Sequence[str],
               series: Sequence[tuple[str, str, Sequence[float | None]]], references: Sequence[tuple[str, str, float]],
               fmt: Callable[[float], str], table_head: list[str], table_rows: list[list[str]],
               height: int = 260) -> Chart:
    """Lines over categorical x positions (hours). `series` is (key, name, values); None is a gap."""
    plot_left, plot_top, plot_right, plot_bottom = LEFT, TOP, WIDTH - RIGHT, height - BOTTOM
    values = [v for _, _, vs in series for v in vs if v is not None]
    top, steps = nice_axis(max(values + [value for _, _, value in references], default=0) * 1.05)
    count = max(len(x_labels), 1)
    step = (plot_right - plot_left) / count

    def x_at(index: int) -> float:
        return plot_left + step * (index + 0.5)

    def y_at(value: float) -> float:
        return plot_bottom - (plot_bottom - plot_top) * min(value, top) / top

    drawn: list[Series] = []
    for key, name, vs in series:
        points: list[Point] = []
        segments: list[str] = []
        run: list[str] = []
        for index, value in enumerate(vs):
            if value is None:
                if run:
                    segments.append(" ".join(run))
                run = []
                continue
            point = Point(_r(x_at(index)), _r(y_at(value)), value, f"{x_labels[index]} {name}: {fmt(value)}")
            points.append(point)
            run.append(f"{point.x},{point.y}")
        if run:
            segments.append(" ".join(run))
        drawn.append(Series(key, name, points, segments))
    every = max(1, math.ceil(count / MAX_X_LABELS))
    x_ticks = [Tick(_r(x_at(i)), label) for i, label in enumerate(x_labels) if (count - 1 - i) % every == 0]
    y_ticks = [Tick(_r(y_at(top * i / steps)), fmt(top * i / steps)) for i in range(steps + 1)]
    return Chart(kind="lines", slug=slug, title=title, description=description, width=WIDTH, height=height,
                 plot_left=plot_left, plot_top=plot_top, plot_right=plot_right, plot_bottom=plot_bottom,
                 x_ticks=x_ticks, y_ticks=y_ticks, series=drawn,
                 references=[Reference(kind, label, _r(y_at(value))) for kind, label, value in references],
                 table_head=table_head, table_rows=table_rows, empty=not values)


def column_chart(*, slug: str, title: str, description: str, columns: Sequence[tuple[str, float, bool]],
                 boundary: tuple[str, str, int] | None, fmt: Callable[[float], str], table_head: list[str],
                 table_rows: list[list[str]], height: int = 300) -> Chart:
    """Vertical bars (a histogram). `columns` is (label, value, over alarm); `boundary` draws
    (kind, label, index) as a line before the column at `index`. Labels are drawn slanted."""
    plot_left, plot_top, plot_right, plot_bottom = LEFT, TOP, WIDTH - RIGHT, height - BOTTOM - 36
    top, steps = nice_axis(max((value for _, value, _ in columns), default=0) * 1.05, whole=True)
    count = max(len(columns), 1)
    step = (plot_right - plot_left) / count
    bars = []
    for index, (label, value, over) in enumerate(columns):
        bar_height = (plot_bottom - plot_top) * value / top
        bars.append(Bar(_r(plot_left + step * index + step * 0.1), _r(plot_bottom - bar_height), _r(step * 0.8),
                        _r(bar_height), label, value, fmt(value), over))
    x_ticks = [Tick(_r(plot_left + step * (i + 0.5)), label) for i, (label, _, _) in enumerate(columns)]
    y_ticks = [Tick(_r(plot_bottom - (plot_bottom - plot_top) * i / steps), fmt(top * i / steps))
               for i in range(steps + 1)]
    references = []
    if boundary is not None:
        kind, label, index = boundary
        references.append(Reference(kind, label, _r(plot_left + step * index)))
    return Chart(kind="columns", slug=slug, title=title, description=description, width=WIDTH, height=height,
                 plot_left=plot_left, plot_top=plot_top, plot_right=plot_right, plot_bottom=plot_bottom,
                 x_ticks=x_ticks, y_ticks=y_ticks, bars=bars, references=references,
                 table_head=table_head, table_rows=table_rows, empty=not any(value for _, value, _ in columns))


def bar_chart(*, slug: str, title: str, description: str, rows: Sequence[tuple[str, float, str, bool]],
              maximum: float, references: Sequence[tuple[str, str, float]], fmt: Callable[[float], str],
              table_head: list[str], table_rows: list[list[str]]) -> Chart:
    """Horizontal bars, one per row: (label, value, value text, past the alarm), on a fixed 0..maximum axis."""
    # Room on the left for the row labels and on the right for the value written after each bar.
    row_height, label_width, value_width = 24, 200, 160
    height = TOP + BOTTOM + row_height * max(len(rows), 1)
    plot_left, plot_top, plot_right, plot_bottom = label_width, TOP, WIDTH - RIGHT - value_width, height - BOTTOM
    span = plot_right - plot_left

    def x_at(value: float) -> float:
        return plot_left + span * min(max(value, 0), maximum) / maximum

    bars = [Bar(plot_left, _r(plot_top + row_height * i + 4), _r(x_at(value) - plot_left), row_height - 8, label,
                value, text, over) for i, (label, value, text, over) in enumerate(rows)]
    return Chart(kind="bars", slug=slug, title=title, description=description, width=WIDTH, height=height,
                 plot_left=plot_left, plot_top=plot_top, plot_right=plot_right, plot_bottom=plot_bottom,
                 x_ticks=[Tick(_r(x_at(maximum * i / 4)), fmt(maximum * i / 4)) for i in range(5)],
                 bars=bars, references=_side_by_side([Reference(kind, label, _r(x_at(value)))
                                                     for kind, label, value in references]),
                 table_head=table_head, table_rows=table_rows, empty=not rows)
