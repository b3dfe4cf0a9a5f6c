"""Colours: one per segment, the same in every chart and card; verdict colours."""

from __future__ import annotations

#: Tableau 10: distinct, readable on white, printable. Cycles past ten segments.
SEGMENT_COLOURS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)

#: Colour of each stability verdict.
VERDICT_COLOURS = {
    "stable": "#2e7d32",
    "doubtful": "#ef8f00",
    "unstable": "#c62828",
}
#: Colour for a segment whose stability was not tested.
UNKNOWN_COLOUR = "#8c8c8c"


class ColourMap:
    """Hands out one colour per segment name, in order of first request.

    Examples
    --------
    >>> colours = ColourMap()
    >>> colours("Loyal"), colours("New"), colours("Loyal")
    ('#4e79a7', '#f28e2b', '#4e79a7')
    >>> colours.assigned
    {'Loyal': '#4e79a7', 'New': '#f28e2b'}
    """

    def __init__(self) -> None:
        self.assigned: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if name not in self.assigned:
            self.assigned[name] = SEGMENT_COLOURS[len(self.assigned) % len(SEGMENT_COLOURS)]
        return self.assigned[name]
