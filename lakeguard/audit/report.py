"""Audit reports: an HTML page of numbers, and an opt-in image grid that stays in the run folder.

The HTML report never embeds images. Reconstructions of memorized images are patient images, so
the grid is written only on request, only into the run folder, and the registry rejects it.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _row(label: str, value) -> str:
    if isinstance(value, float):
        value = f"{value:.4f}"
    return f"<tr><th>{html.escape(label)}</th><td>{html.escape(str(value))}</td></tr>"


def write_html_report(audit: dict, path: str | os.PathLike, *, title: str = "lakeguard exfiltration audit") -> Path:
    """Write an HTML page with the numbers of an audit record (see ``AuditResult.to_dict``)."""
    sections = [f"<h1>{html.escape(title)}</h1>", "<table>"]
    for key in ("stage", "dataset", "arch", "model_sha256"):
        sections.append(_row(key, audit.get(key, "")))
    sections.append("</table>")
    canary = audit.get("canary")
    sections.append("<h2>Canary ground truth</h2>")
    if canary:
        sections.append("<table>" + "".join(_row(k, v) for k, v in canary.items()) + "</table>")
    else:
        sections.append("<p>No ground truth: the model did not come from lakeguard's attack recipe.</p>")
    probes = audit.get("probes")
    sections.append("<h2>Target-free probes (published code scheme only)</h2>")
    if probes:
        sections.append("<table>" + "".join(_row(k, v) for k, v in probes.items()) + "</table>")
    else:
        sections.append("<p>Not run: the architecture has no transposed pass.</p>")
    sections.append("<h2>Tensors the forward pass never reads</h2>")
    unread = audit.get("unread_tensors", [])
    sections.append("<p>" + (html.escape(", ".join(unread)) if unread else "none") + "</p>")
    page = "<!DOCTYPE html><html><head><meta charset='utf-8'><title>{}</title></head><body>{}</body></html>\n"
    path = Path(path)
    path.write_text(page.format(html.escape(title), "\n".join(sections)))
    return path


def write_image_grid(top: torch.Tensor, bottom: torch.Tensor, path: str | os.PathLike, *, columns: int = 16) -> Path:
    """Write a PNG with ``top`` images (M, C, H, W) in [0, 1] above ``bottom`` images, column by column.

    Used for reconstructions above their targets. Contains patient images: keep it in the run folder.
    """
    count = min(len(top), len(bottom), columns)
    pairs = torch.cat([top[:count], bottom[:count]])  # (2·count, C, H, W)
    _, channels, height, width = pairs.shape
    grid = torch.ones(channels, 2 * height + 2, count * (width + 2))
    for i in range(count):
        x = i * (width + 2)
        grid[:, :height, x : x + width] = top[i]
        grid[:, height + 2 :, x : x + width] = bottom[i]
    array = (grid.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if channels == 1:
        array = array[:, :, 0]
    path = Path(path)
    Image.fromarray(array).resize((array.shape[1] * 3, array.shape[0] * 3), Image.NEAREST).save(path)
    return path
