"""A cell's outcome as the wire's ``result``: the last expression's value, or the first image it showed or drew."""

from __future__ import annotations

import base64
import contextlib
import io
import math
import sys
from collections.abc import Iterator

from .protocol import RENDER_JSON, RENDER_JUPYTER


def cell_result(images: list[bytes], value: object, max_chars: int, render: str, max_image_bytes: int) -> object:
    """The first of the cell's displayed images, its open matplotlib figures and its value's image; else the value
    itself, written as ``render`` asks (``render_value``). An image over ``max_image_bytes`` is left out (the host
    would hold it, encoded, several times over) and stderr says so."""
    images = images + figure_pngs()
    if not images and (png := png_of(value)) is not None:
        images.append(png)
    if images and len(images[0]) > max_image_bytes:
        print(f"ImageTooLarge: the image{png_size(images[0])} is {len(images[0]) / 1e6:.1f} MB as PNG;\n"
              f"this sandbox returns images up to {max_image_bytes / (1 << 20):g} MiB. Draw it smaller (a lower dpi or\n"
              "figsize), or save it to /mnt/data and download it.", file=sys.stderr)  # fmt: skip
    elif images:
        return {"type": "image", "format": "png", "base64_data": base64.b64encode(images[0]).decode("ascii")}
    return render_value(value, render, max_chars)


def png_size(png: bytes) -> str:
    """The text " (W×H pixels)" from a PNG's header, or "" when it is not one."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR" or len(png) < 24:
        return ""
    return f" ({int.from_bytes(png[16:20], 'big')}×{int.from_bytes(png[20:24], 'big')} pixels)"


def render_value(value: object, render: str, max_chars: int) -> object:
    """The wire value of a cell's last value as the api-version renders it: ``legacy`` is :func:`encode_value`;
    ``json`` writes a non-finite float as null; ``jupyter`` writes Jupyter's ``text/plain`` of every value (``'nan'``
    for the string, ``nan`` for the float) and null for none."""
    if render == RENDER_JUPYTER:
        if value is None:
            return None
        try:
            from IPython.lib.pretty import pretty

            text = pretty(value, max_width=79)
        except Exception:  # pretty() runs the value's own code: a broken __repr__ is written as such
            return encode_value(value, max_chars)
        return encode_value(text, max_chars)
    scalar = value.item() if type(value).__module__ == "numpy" and getattr(value, "shape", None) == () else value
    if render == RENDER_JSON and isinstance(scalar, float) and not math.isfinite(scalar):
        return None
    return encode_value(value, max_chars)


@contextlib.contextmanager
def empty_namespace(shell) -> Iterator[None]:
    """``useEmptyKernel``: the cell runs in a namespace of its own (builtins and IPython's own names only); the
    session's variables are back, untouched, when it ends."""
    saved = dict(shell.user_ns)
    keep = {k: v for k, v in saved.items() if k in shell.user_ns_hidden or (k.startswith("__") and k.endswith("__"))}
    shell.user_ns.clear()
    shell.user_ns.update(keep)
    try:
        yield
    finally:
        while True:  # an interrupt that arrives late must not leave the session's namespace half restored
            try:
                shell.user_ns.clear()
                shell.user_ns.update(saved)
                break
            except KeyboardInterrupt:
                continue


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
