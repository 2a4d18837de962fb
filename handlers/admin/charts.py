"""Chart images for the dashboard: matplotlib with the Agg backend (no display), PNG bytes.

``render_errors_per_hour`` builds a ``Figure`` directly (no pyplot global state), so it is
safe to call from a worker thread (``asyncio.to_thread``) while the bot keeps serving.
matplotlib is the optional ``charts`` extra: without it the admin menu shows the figures as
text (``charts_available``).
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Mapping
from typing import cast

from recovery.error_stats import HourlySeries

WIDTH_IN, HEIGHT_IN, DPI = 10.0, 5.0, 100
"""1000 x 500 px: within sendPhoto's limits (width + height <= 10000, ratio <= 20)."""


def charts_available() -> bool:
    """True when matplotlib (the ``charts`` extra) is installed."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ImportError:  # a finder that refuses the name, a broken install
        return False


def render_errors_per_hour(
    series: HourlySeries,
    *,
    title: str,
    category_labels: Mapping[str, str],
    y_label: str,
) -> bytes:
    """Stacked bars of occurrences per UTC hour, one colour per category; returns PNG bytes.

    ``category_labels`` maps category codes to the (already translated) legend labels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(series.hours)))
    bottom = [0] * len(positions)
    for category, values in series.by_category.items():
        axes.bar(
            positions,
            values,
            bottom=bottom,
            width=0.85,
            label=category_labels.get(category, category),
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    step = max(len(positions) // 12, 1)
    axes.set_xticks(positions[::step])
    axes.set_xticklabels(
        [hour.strftime("%d.%m %H:00") for hour in series.hours[::step]], rotation=45, ha="right"
    )
    axes.set_ylabel(y_label)
    axes.set_title(title)
    axes.set_xlim(-0.5, len(positions) - 0.5)
    # a linear axis' default locator is an AutoLocator, a MaxNLocator
    cast(MaxNLocator, axes.yaxis.get_major_locator()).set_params(integer=True)
    if series.by_category:
        axes.legend(loc="upper left", fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
