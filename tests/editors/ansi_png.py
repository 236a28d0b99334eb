"""Rendering a tmux ``capture-pane -e`` dump (text with SGR colour codes) as a small PNG."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
DEFAULT_FG, DEFAULT_BG = (220, 220, 220), (30, 30, 30)
BASIC = [(0, 0, 0), (205, 49, 49), (13, 188, 121), (229, 229, 16), (36, 114, 200), (188, 63, 188), (17, 168, 205),
         (229, 229, 229), (102, 102, 102), (241, 76, 76), (35, 209, 139), (245, 245, 67), (59, 142, 234),
         (214, 112, 214), (41, 184, 219), (255, 255, 255)]
SGR = re.compile(r"\x1b\[([0-9;]*)m")


def color_256(n: int) -> tuple[int, int, int]:
    if n < 16:
        return BASIC[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return steps[n // 36], steps[n // 6 % 6], steps[n % 6]
    level = 8 + (n - 232) * 10
    return level, level, level


def apply_sgr(params: list[int], fg, bg, reverse):
    """New (fg, bg, reverse) after one SGR sequence."""
    i = 0
    while i < len(params):
        p = params[i]
        if p == 0:
            fg, bg, reverse = DEFAULT_FG, DEFAULT_BG, False
        elif p == 7:
            reverse = True
        elif p == 27:
            reverse = False
        elif 30 <= p <= 37 or 90 <= p <= 97:
            fg = BASIC[p - 30 if p < 90 else p - 82]
        elif 40 <= p <= 47 or 100 <= p <= 107:
            bg = BASIC[p - 40 if p < 100 else p - 92]
        elif p == 39:
            fg = DEFAULT_FG
        elif p == 49:
            bg = DEFAULT_BG
        elif p in (38, 48) and i + 1 < len(params):
            if params[i + 1] == 5 and i + 2 < len(params):
                value, i = color_256(params[i + 2]), i + 2
            elif params[i + 1] == 2 and i + 4 < len(params):
                value, i = tuple(params[i + 2:i + 5]), i + 4
            else:
                value = DEFAULT_FG if p == 38 else DEFAULT_BG
            fg, bg = (value, bg) if p == 38 else (fg, value)
        i += 1
    return fg, bg, reverse


def render_png(dump: str, size: tuple[int, int], path: Path, font_size: int = 14) -> None:
    """Draw ``dump`` on a ``size`` (columns, rows) grid and save it to ``path``."""
    font = ImageFont.truetype(FONT, font_size)
    cell_w = round(font.getlength("M"))
    cell_h = font_size + 4
    image = Image.new("RGB", (size[0] * cell_w, size[1] * cell_h), DEFAULT_BG)
    draw = ImageDraw.Draw(image)
    fg, bg, reverse = DEFAULT_FG, DEFAULT_BG, False
    for row, line in enumerate(dump.split("\n")[: size[1]]):
        col = 0
        for piece in re.split(r"(\x1b\[[0-9;]*m)", line):
            match = SGR.fullmatch(piece)
            if match:
                fg, bg, reverse = apply_sgr([int(p) if p else 0 for p in match.group(1).split(";")], fg, bg, reverse)
                continue
            for ch in piece:
                ink, paper = (bg, fg) if reverse else (fg, bg)
                x, y = col * cell_w, row * cell_h
                draw.rectangle([x, y, x + cell_w, y + cell_h], fill=paper)
                draw.text((x, y + 1), ch, font=font, fill=ink)
                col += 1
    image.save(path, optimize=True)
