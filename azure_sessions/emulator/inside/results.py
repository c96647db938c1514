"""A cell's outcome as the wire's ``result``: the last expression's value, or the first image it showed or drew."""

from __future__ import annotations

import base64
import io
import math
import sys


def cell_result(images: list[bytes], value: object, max_chars: int) -> object:
    """The first of the cell's displayed images, its open matplotlib figures and its value's image; else the value
    itself (``encode_value``)."""
    images = images + figure_pngs()
    if not images and (png := png_of(value)) is not None:
        images.append(png)
    if images:
        return {"type": "image", "format": "png", "base64_data": base64.b64encode(images[0]).decode("ascii")}
    return encode_value(value, max_chars)


def clean(text: str) -> str:
    """Make a string encodable as UTF-8 (lone surrogates become escapes)."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def encode_value(value: object, max_chars: int) -> object:
    """Last-expression value -> wire value: JSON scalars natively, ``""`` for none, ``repr`` otherwise."""
    if value is None:
        return ""
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == () and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, str):
        text = str(value)
    else:
        try:
            text = repr(value)
        except Exception as exc:  # a broken __repr__ must not break the session
            text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    if len(text) > max_chars:
        text = text[:max_chars] + f"... [{len(text) - max_chars} characters truncated by the emulator]"
    return clean(text)


def png_of(value: object) -> bytes | None:
    """PNG bytes for values Jupyter would show as an image (objects with _repr_png_, matplotlib figures)."""
    try:
        if hasattr(value, "savefig") and type(value).__name__ == "Figure":
            buf = io.BytesIO()
            value.savefig(buf, format="png", bbox_inches="tight")
            return buf.getvalue()
        repr_png = getattr(value, "_repr_png_", None)
        if callable(repr_png) and not isinstance(value, type):
            data = repr_png()
            if isinstance(data, tuple):
                data = data[0]
            if isinstance(data, str):
                data = base64.b64decode(data)
            return data if isinstance(data, bytes) and data else None
    except Exception as exc:
        print(f"Could not render the result as an image: {exc!r}", file=sys.stderr)
    return None


def figure_pngs() -> list[bytes]:
    """Every open matplotlib figure as PNG, then closed."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    images = []
    try:
        for num in plt.get_fignums():
            buf = io.BytesIO()
            plt.figure(num).savefig(buf, format="png", bbox_inches="tight")
            images.append(buf.getvalue())
    except Exception as exc:
        print(f"Could not render a matplotlib figure: {exc!r}", file=sys.stderr)
    finally:
        plt.close("all")
    return images
