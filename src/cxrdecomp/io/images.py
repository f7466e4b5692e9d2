"""Image outputs: 16-bit PNGs, a labelled side-by-side preview, and an HTML index page.

All inputs are display-domain images ``(H, W)`` in ``[0, 1]`` (air dark, bone bright); values
outside ``[0, 1]`` are clipped. Every file is written atomically (:func:`cxrdecomp.io.atomic.atomic_path`).

The bone image is small and partly negative in the display domain, so it is written through a
linear *display mapping* ``png = (bone − low) / (high − low)`` (:func:`bone_display_range`), with
``low = min(0, 0.5th percentile)`` and ``high`` the 99.5th percentile of the bone image; the two
numbers are stored in ``decomposition.json`` (and in the DICOM) so that the bone values can be
recovered: ``bone = low + png/65535 · (high − low)``.
"""

from __future__ import annotations

import html
import os
import struct
import zlib
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from cxrdecomp.io.atomic import atomic_path


def to_uint16(image) -> np.ndarray:
    """Display-domain ``(H, W)`` float → uint16 ``round(65535·clip(x, 0, 1))`` (uint16 passes through)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint16:
        return image
    a = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float32)
    a = np.clip(a, 0.0, 1.0) * np.float32(65535.0)
    a += np.float32(0.5)
    return a.astype(np.uint16)


def to_uint8(image) -> np.ndarray:
    """Display-domain ``(H, W)`` float (or uint16 ``0..65535``) → uint8 ``round(255·clip(x, 0, 1))``."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint16:
        return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    a = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float32)
    return (np.clip(a, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def bone_display_range(bone, lo_pct: float = 0.5, hi_pct: float = 99.5) -> tuple[float, float]:
    """``(low, high)`` of the bone display mapping ``(bone − low)/(high − low)`` (module docstring).

    ``low = min(0, p_lo)``, ``high = max(p_hi, low + 1e-3)``, percentiles on a regular subsample.
    """
    a = np.asarray(bone.detach().cpu().numpy() if hasattr(bone, "detach") else bone, dtype=np.float32)
    sub = a[:: max(1, a.shape[0] // 512), :: max(1, a.shape[1] // 512)]
    p_lo, p_hi = (float(v) for v in np.percentile(sub, [lo_pct, hi_pct]))
    low = min(0.0, p_lo)
    high = max(p_hi, low + 1e-3)
    return low, high


def apply_display_range(image, low: float, high: float) -> np.ndarray:
    """``(image − low)/(high − low)`` as float32 (then clipped by the writers)."""
    a = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float32)
    return (a - np.float32(low)) * np.float32(1.0 / (high - low))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png16(pixels: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode a uint16 ``(H, W)`` array as a 16-bit greyscale PNG (PNG spec, filter type 2 "Up").

    Written with numpy + zlib rather than Pillow: ~1.8x less CPU for the same size (the "Up" filter
    is computed in one vectorised subtraction), and zlib releases the GIL so several files can be
    encoded in parallel threads.
    """
    a = np.asarray(pixels)
    if a.dtype != np.uint16 or a.ndim != 2:
        raise ValueError(f"expected a uint16 (H, W) array, got {a.dtype} {a.shape}")
    h, w = a.shape
    b = a.astype(">u2").view(np.uint8).reshape(h, 2 * w)
    rows = np.empty((h, 2 * w + 1), np.uint8)
    rows[:, 0] = 2  # "Up": byte minus the byte above (mod 256)
    rows[0, 0] = 0  # first row unfiltered
    rows[0, 1:] = b[0]
    np.subtract(b[1:], b[:-1], out=rows[1:, 1:])
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)  # 16-bit, greyscale, deflate, adaptive filters, no interlace
    idat = zlib.compress(rows.tobytes(), compress_level)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def write_png16(path: str | os.PathLike, image, compress_level: int = 1) -> Path:
    """Write a display-domain ``(H, W)`` image (float in ``[0, 1]`` or uint16) as a 16-bit greyscale PNG (atomic).

    ``compress_level`` 1 (fast zlib): ~0.16 CPU-s for a 2k×2k radiograph; level 6 is barely smaller
    on noisy 16-bit data.
    """
    path = Path(path)
    data = encode_png16(to_uint16(image), compress_level)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return path


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def make_preview(panels: Mapping[str, object], height: int = 512, gap: int = 6, label_height: int = 28):
    """Side-by-side panels (e.g. input | bone | soft tissue | enhanced) with a label above each.

    Args:
        panels: label → display-domain ``(H, W)`` image (already mapped for display, e.g. the bone
            image through :func:`apply_display_range`).
        height: panel height in pixels (each keeps its aspect ratio).

    Returns:
        An 8-bit greyscale ``PIL.Image``.
    """
    from PIL import Image, ImageDraw

    tiles = []
    for label, img in panels.items():
        a = to_uint8(img)
        h, w = a.shape
        pw = max(1, round(w * height / h))
        tiles.append((label, Image.fromarray(a).resize((pw, height), Image.BILINEAR)))
    width = sum(t.width for _, t in tiles) + gap * (len(tiles) - 1)
    canvas = Image.new("L", (max(width, 1), height + label_height), color=0)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, label_height - 10))
    x = 0
    for label, tile in tiles:
        canvas.paste(tile, (x, label_height))
        draw.text((x + 6, 4), label, fill=255, font=font)
        x += tile.width + gap
    return canvas


def write_preview(path: str | os.PathLike, panels: Mapping[str, object], height: int = 512) -> Path:
    """Write :func:`make_preview` as an 8-bit PNG (atomic)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        make_preview(panels, height=height).save(tmp, format="PNG", compress_level=3)
    return path


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #111; color: #ddd; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-bottom: .3em; }
a { color: #8cf; } .case { margin-bottom: 2em; } .case img { max-width: 100%; border: 1px solid #333; }
.meta, .files { font-size: .9em; color: #aaa; } .failed { color: #f88; }
.note { font-size: .85em; color: #999; max-width: 60em; }
"""


def write_index_html(path: str | os.PathLike, cases: Iterable[Mapping], failures: Iterable[Mapping] = (), title: str = "cxrdecomp results") -> Path:
    """Write a self-contained HTML page listing every case with its preview (relative links, atomic).

    Args:
        path: the HTML file (links are made relative to its folder).
        cases: mappings with ``name``, ``source``, ``method``, ``preview`` (path), ``files``
            (name → path) and optionally ``warnings`` (list of str), ``options`` (dict).
        failures: mappings with ``source`` and ``error`` (a message naming the file) for inputs that could not be decomposed.
    """
    path = Path(path)
    root = path.parent.resolve()

    def rel(p) -> str:
        return html.escape(os.path.relpath(Path(p).resolve(), root).replace(os.sep, "/"), quote=True)

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="note">Panels: input | bone | soft tissue (bone suppressed) | enhanced. The bone panel '
        "is shown through a linear display mapping (low/high in each case's decomposition.json). "
        "Research use only, not for diagnosis.</p>",
    ]
    for c in cases:
        parts.append('<div class="case">')
        parts.append(f"<h2>{html.escape(str(c['name']))}</h2>")
        opts = c.get("options") or {}
        meta = f"source: {html.escape(str(c.get('source', '')))} &middot; method: {html.escape(str(c.get('method', '')))}"
        if opts:
            meta += " &middot; " + ", ".join(f"{html.escape(str(k))}={html.escape(str(v))}" for k, v in opts.items())
        parts.append(f'<div class="meta">{meta}</div>')
        if c.get("preview"):
            parts.append(f'<a href="{rel(c["preview"])}"><img src="{rel(c["preview"])}" alt="{html.escape(str(c["name"]))} preview"></a>')
        files = c.get("files") or {}
        if files:
            links = " &middot; ".join(f'<a href="{rel(p)}">{html.escape(str(k))}</a>' for k, p in files.items())
            parts.append(f'<div class="files">full resolution: {links}</div>')
        for w in c.get("warnings") or ():
            parts.append(f'<div class="meta">warning: {html.escape(str(w))}</div>')
        parts.append("</div>")
    failures = list(failures)
    if failures:
        parts.append("<h2>Failed inputs</h2><ul>")
        for f in failures:
            parts.append(f'<li class="failed">{html.escape(str(f.get("error") or f.get("source", "")))}</li>')
        parts.append("</ul>")
    parts.append("</body></html>\n")
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")
    return path
