"""The burndown chart: consumers still reading the old dataset over time, drawn server-side
with matplotlib as an SVG image (axes with dates and counts, a legend, the total explained).

Drawn on the server because the portal's Content-Security-Policy runs no inline script and
loads nothing from another origin; the SVG is sent as a ``data:`` image (``img-src 'self'
data:``), so its own styles stay inside the image. matplotlib is imported on first use only.

>>> from datetime import UTC, datetime
>>> from skein.views import Burndown, BurndownPoint
>>> at = lambda h: datetime(2026, 12, 1, h, tzinfo=UTC)
>>> svg = burndown_svg(Burndown(total=3, remaining=1, listed=4, applied=2, points=[
...     BurndownPoint(at=at(9), remaining=3), BurndownPoint(at=at(10), remaining=1)]), "a.plays")
>>> svg.startswith("<?xml") and "still reading a.plays" in svg
True
>>> burndown_svg(Burndown(total=3, remaining=3, points=[BurndownPoint(at=at(9), remaining=3)]), "a.p") is None
True
"""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime


def burndown_svg(series, source: str, now: datetime | None = None) -> str | None:
    """The chart as SVG text, or None when nothing was applied yet (nothing to draw: the page
    says so in words instead of an empty box)."""
    if len(series.points) < 2:  # the plan's point only: nothing applied (or rolled back) yet
        return None
    import matplotlib
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in a server thread

    times = [p.at if p.at.tzinfo else p.at.replace(tzinfo=UTC) for p in series.points]  # SQLite drops the zone
    times.append(max(now or datetime.now(UTC), times[-1]))
    counts = [p.remaining for p in series.points] + [series.points[-1].remaining]
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "skein", "font.size": 9}):
        fig = Figure(figsize=(7.5, 2.6), dpi=96, layout="constrained")
        ax = fig.add_subplot()
        ax.step(times, counts, where="post", color="#2563eb", linewidth=2,
                label=f"still reading {source} (now {series.remaining})")
        ax.axhline(series.total, color="#9ca3af", linestyle="--", linewidth=1,
                   label=f"read it directly when planned ({series.total})")
        ax.set_ylim(0, max(series.total, 1) * 1.1)
        ax.set_ylabel("consumers")
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.set_xlabel("time (UTC)")
        ax.grid(axis="y", color="#e5e7eb")
        ax.legend(loc="lower left", frameon=False)
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def data_uri(svg: str) -> str:
    """An SVG as an ``<img src>`` the CSP allows.

    >>> data_uri("<svg/>")
    'data:image/svg+xml;base64,PHN2Zy8+'
    """
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
