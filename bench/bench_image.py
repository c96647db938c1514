"""The image: the Dockerfile built twice side by side with `scripts/build-image.sh` (as a Space builds it, and with the
offline model, `LOCAL_MODEL=1`), on the same base, from the same layer cache; their sizes, the base's, and the layer
of the installed environment. Needs a container engine: Docker, or podman as root (the script installs it with apt
where it is missing); without one the section says so and measures nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from bench.common import ROOT, BenchReport, Row, cli, run_and_save

TAGS = {"default": "sessions-playground:bench", "local model": "sessions-playground:bench-local-model"}
TARGET_MB = 700  # what a Space pulls on every cold start: the default image stays below this
MB = 1_000_000


def engine() -> str | None:
    """The engine `build-image.sh` would use, if one can run here."""
    docker = shutil.which("docker")
    if docker and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    if shutil.which("podman") and os.geteuid() == 0:
        return "podman"
    return None


def build(tag: str, local_model: bool) -> float:
    """Build `tag` with the project's script; returns the wall time in seconds."""
    command = ["bash", "scripts/build-image.sh", "--tag", tag, *(["--local-model"] if local_model else [])]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def size(tool: str, image: str) -> int:
    out = subprocess.run([tool, "image", "inspect", "--format", "{{.Size}}", image], capture_output=True, text=True)
    return int(out.stdout.strip())


def environment_layer(tool: str, image: str) -> int:
    """Bytes of the layer that installs the environment (the Dockerfile's `scripts/setup.sh app --image` step)."""
    if tool == "podman":
        out = subprocess.run(
            [tool, "history", "--no-trunc", "--format", "json", image], capture_output=True, check=True
        )
        layers = [(int(layer["size"]), layer.get("CreatedBy", "")) for layer in json.loads(out.stdout)]
    else:  # docker prints bytes only with --human=false
        out = subprocess.run(
            [tool, "history", "--no-trunc", "--human=false", "--format", "{{.Size}}\t{{.CreatedBy}}", image],
            capture_output=True,
            text=True,
            check=True,
        )
        layers = [(int(size), step) for size, _, step in (line.partition("\t") for line in out.stdout.splitlines())]
    for layer_size, step in layers:
        if "setup.sh app --image" in step:
            return layer_size
    raise RuntimeError(f"no environment layer in {image}'s history")


def body(quick: bool) -> BenchReport:
    report = BenchReport("image", "9. The image")
    tool = engine()
    if tool is None:
        report.notes.append("No container engine here (Docker, or podman as root): nothing measured.")
        return report
    seconds = {name: build(tag, name == "local model") for name, tag in TAGS.items()}
    sizes = {name: size(tool, tag) for name, tag in TAGS.items()}
    layers = {name: environment_layer(tool, tag) for name, tag in TAGS.items()}
    base = size(tool, "python:3.11-slim")
    saved = sizes["local model"] - sizes["default"]
    report.rows += [
        Row(
            "the image as a Space builds it (no offline model)",
            f"`scripts/build-image.sh` with {tool}; environment layer {layers['default'] / MB:.0f} MB",
            f"{sizes['default'] / MB:.0f} MB",
            ratio=f"{sizes['default'] / sizes['local model']:.2f}× the size with the model ({saved / MB:.0f} MB less)",
            target=f"≤ {TARGET_MB} MB",
            met=sizes["default"] <= TARGET_MB * MB,
        ),
        Row(
            "the image with the offline model (`--local-model`, LOCAL_MODEL=1)",
            f"the same script and cache; environment layer {layers['local model'] / MB:.0f} MB",
            f"{sizes['local model'] / MB:.0f} MB",
        ),
        Row(
            "the base image (`python:3.11-slim`, or the stand-in built here)",
            f"`{tool} image inspect`",
            f"{base / MB:.0f} MB",
        ),
    ]
    report.notes.append(
        "Build times from the layer cache (only the layers after the source copy rebuilt): "
        + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
        + ". The font cache of matplotlib is built in the image, not at the first plot of each new container."
    )
    return report


if __name__ == "__main__":
    run_and_save("image", body, cli(__doc__).quick)
