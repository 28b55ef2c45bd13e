"""Charts for the offline reports, drawn as inline SVG by this module: no library, font or script is
fetched, so a report opens on an intranet with no network. Every text is escaped; the SVG carries no
namespace URL (inline SVG in HTML5 needs none) so the page holds no URL of any kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

PALETTE = ("#3b6ea5", "#d08c2c", "#5b9a5b", "#b24a4a", "#7a5ba8", "#4a9aa8", "#a8884a")


def _num(value: float) -> str:
    return f"{value:,.2f}" if value != int(value) else f"{int(value):,}"


def hbar(rows: Sequence[tuple[str, float]], title: str = "", unit: str = "", width: int = 640) -> Markup:
    """Horizontal bars, one per (label, value), largest first as given; negative values drawn leftwards
    from the same axis with their sign shown."""
    if not rows:
        return Markup("")
    bar_h, gap, label_w, value_w = 18, 6, 170, 110
    plot = width - label_w - value_w
    top = 22 if title else 4
    height = top + len(rows) * (bar_h + gap) + 4
    biggest = max(abs(v) for _, v in rows) or 1.0
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
    ]
    if title:
        parts.append(f'<text x="0" y="14" class="chart-title">{escape(title)}</text>')
    for i, (label, value) in enumerate(rows):
        y = top + i * (bar_h + gap)
        length = max(abs(value) / biggest * plot, 1.0 if value else 0.0)
        colour = PALETTE[3] if value < 0 else PALETTE[0]
        text = f"{escape(label)}: {_num(value)}{escape(unit)}"
        parts.append(
            f"<g><title>{text}</title>"
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" class="chart-label">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{bar_h}" fill="{colour}"></rect>'
            f'<text x="{label_w + length + 4:.1f}" y="{y + 13}" class="chart-value">'
            f"{_num(value)}{escape(unit)}</text></g>"
        )
    parts.append("</svg>")
    # every text above went through escape(); the rest is numbers and constants
    return Markup("".join(parts))  # noqa: S704


def trend(
    points: Sequence[str], series: Mapping[str, Sequence[float | None]], title: str = "", width: int = 640
) -> Markup:
    """Lines across runs: `points` are the x labels (runs), each series one value per point (None: gap)."""
    if not points or not series:
        return Markup("")
    height, left, right, top, bottom = 220, 60, 150, 24 if title else 8, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    high = max(values, default=0.0) or 1.0
    step = plot_w / max(len(points) - 1, 1)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
    ]
    if title:
        parts.append(f'<text x="0" y="14" class="chart-title">{escape(title)}</text>')
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="axis"></line>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" class="axis"></line>'
        f'<text x="{left - 4}" y="{top + 10}" text-anchor="end" class="chart-value">{_num(high)}</text>'
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" class="chart-value">0</text>'
    )
    for i, label in enumerate(points):
        x = left + i * step
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="chart-label">{escape(label)}</text>'
        )
    for k, (name, vs) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        coords = [
            (left + i * step, top + plot_h - (v / high) * plot_h) for i, v in enumerate(vs) if v is not None
        ]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"></polyline>'
            )
        for (x, y), v in zip(coords, [v for v in vs if v is not None], strict=True):
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{escape(name)}: {_num(v)}</title></circle>'
            )
        parts.append(
            f'<rect x="{width - right + 10}" y="{top + k * 18}" width="10" height="10" fill="{colour}"></rect>'
            f'<text x="{width - right + 24}" y="{top + k * 18 + 9}" class="chart-label">{escape(name)}</text>'
        )
    parts.append("</svg>")
    # every text above went through escape(); the rest is numbers and constants
    return Markup("".join(parts))  # noqa: S704
