"""Pen strokes of the ten digits, as a person draws them on the demo's 280x280 pad.

Each digit is a list of strokes; a stroke is a polyline of points in pad pixels relative
to the pad's centre (Selenium's pointer offsets), y down. Curves are sampled densely so
that the page's pointer-move handler draws them as a person's hand would.
"""

from __future__ import annotations

import math

SCALE = 95  # half the height of a digit in pad pixels (the pad is 280 high)


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float,
         n: int = 24) -> list[tuple[float, float]]:
    """Points of an elliptic arc, angles in degrees (0 = right, 90 = down)."""
    return [(cx + rx * math.cos(math.radians(start + (end - start) * i / n)),
             cy + ry * math.sin(math.radians(start + (end - start) * i / n)))
            for i in range(n + 1)]


def _line(x0: float, y0: float, x1: float, y1: float, n: int = 8
          ) -> list[tuple[float, float]]:
    return [(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n) for i in range(n + 1)]


def _eight() -> list[tuple[float, float]]:
    return [(0.42 * math.sin(2 * t), -0.9 * math.cos(t))
            for t in (2 * math.pi * i / 48 for i in range(49))]


# Unit coordinates: x right, y down, the digit in about [-0.6, 0.6] x [-0.9, 0.9].
UNIT: dict[int, list[list[tuple[float, float]]]] = {
    0: [_arc(0, 0, 0.5, 0.88, -90, 275, 36)],
    1: [_line(-0.25, -0.62, 0.05, -0.9, 4) + _line(0.05, -0.9, 0.0, 0.9, 12)],
    2: [_arc(0, -0.42, 0.45, 0.42, 200, 360, 16)
        + _line(0.45, -0.42, -0.5, 0.88, 12) + _line(-0.5, 0.88, 0.55, 0.88, 8)],
    3: [_arc(-0.02, -0.45, 0.45, 0.42, 200, 450, 20)
        + _arc(-0.02, 0.42, 0.5, 0.47, -90, 160, 20)],
    4: [_line(0.1, -0.9, -0.55, 0.3, 10) + _line(-0.55, 0.3, 0.55, 0.3, 8),
        _line(0.25, -0.35, 0.25, 0.9, 10)],
    5: [_line(0.5, -0.88, -0.35, -0.88, 6) + _line(-0.35, -0.88, -0.42, -0.08, 6)
        + _arc(-0.02, 0.38, 0.48, 0.5, -120, 160, 22)],
    6: [_arc(0.55, 0.15, 1.0, 1.05, 235, 180, 12) + _arc(0.0, 0.45, 0.45, 0.45, 180, 540, 30)],
    7: [_line(-0.55, -0.88, 0.55, -0.88, 8) + _line(0.55, -0.88, -0.1, 0.9, 14)],
    8: [_eight()],
    9: [_arc(0.0, -0.45, 0.45, 0.43, 0, 370, 30) + _line(0.45, -0.4, 0.35, 0.9, 12)],
}


def strokes(digit: int, scale: float = SCALE) -> list[list[tuple[int, int]]]:
    """The digit's strokes in pad pixels (integers), relative to the pad's centre."""
    return [[(round(x * scale), round(y * scale)) for x, y in s] for s in UNIT[digit]]
