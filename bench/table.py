"""Result rows and their rendering as one markdown table."""

from dataclasses import dataclass


@dataclass
class Row:
    """One figure of Posta next to its peer's figure from the same run."""

    bench: str
    figure: str
    value: float | None
    unit: str
    peer: float | None = None
    peer_name: str = ""
    target: str = ""
    ok: bool | None = None

    @property
    def ratio(self) -> float | None:
        """Posta's figure over the peer's, when both were measured."""
        if self.value is None or not self.peer:
            return None
        return self.value / self.peer


def percentile(values: list[float], p: float) -> float | None:
    """Return the p-th percentile (nearest rank) of values, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


HEADER = ("bench", "figure", "Posta", "peer", "ratio", "target", "met")


def fmt(value: float | None, unit: str = "") -> str:
    """Format a figure with three significant digits and its unit."""
    if value is None:
        return "not measured"
    if value == 0 or abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 1:
        text = f"{value:.3g}"
    else:
        text = f"{value:.2g}"
    return f"{text} {unit}".strip()


def cells(row: Row) -> tuple[str, ...]:
    """Return the row's cells in HEADER order."""
    peer = "" if row.peer is None else f"{fmt(row.peer, row.unit)} ({row.peer_name})"
    ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
    met = {True: "yes", False: "NO", None: ""}[row.ok]
    return (
        row.bench,
        row.figure,
        fmt(row.value, row.unit),
        peer,
        ratio,
        row.target,
        met,
    )


def markdown(rows: list[Row]) -> str:
    """Render rows as a markdown table with aligned columns."""
    table = [HEADER] + [cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]

    def line(values) -> str:
        padded = (
            value.ljust(width) for value, width in zip(values, widths, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(HEADER), rule] + [line(values) for values in table[1:]])
