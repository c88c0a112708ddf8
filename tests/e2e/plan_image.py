"""The floor-plan picture the end-to-end tests and the floor-plan bench upload: a white sheet
with a light grid, the walls drawn on it by the caller, as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.ImageDraw import ImageDraw

GRID_COLOUR = (236, 239, 241)
WALL_COLOUR = (69, 90, 100)


def plan_png(width: int, height: int, walls: Callable[[ImageDraw], None], grid: int = 50) -> bytes:
    """A `width` x `height` px plan, a grid line every `grid` px under the walls."""
    # Pillow is imported here: only the tests and the bench that draw a plan need it
    from PIL import Image
    from PIL import ImageDraw as Draw

    image = Image.new("RGB", (width, height), "white")
    draw = Draw.Draw(image)
    for x in range(0, width, grid):
        draw.line([(x, 0), (x, height)], fill=GRID_COLOUR)
    for y in range(0, height, grid):
        draw.line([(0, y), (width, y)], fill=GRID_COLOUR)
    walls(draw)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
