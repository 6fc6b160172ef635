"""Figures: image grids and alignment-diversity plots (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid


def to_pil(image: torch.Tensor) -> Image.Image:
    """One image (C, H, W) in [0, 1] as an 8-bit PIL image (grey for one channel)."""
    array = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def image_grid(images: torch.Tensor, nrow: int, upscale: int = 1) -> Image.Image:
    """Images (N, C, H, W) in [0, 1] as one PIL grid, each image enlarged ``upscale`` times."""
    if upscale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=upscale, mode="nearest")
    return to_pil(make_grid(images.clamp(0, 1), nrow=nrow, padding=2, pad_value=0.5))


def save_grid(images: torch.Tensor, nrow: int, path: str | Path, upscale: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, nrow, upscale).save(path)
    return path


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (parents created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    return path


def trajectory_plot(trajectories: dict[str, list[dict]], path: str | Path, reference: dict | None = None,
                    title: str = "alignment vs diversity along training", panels: dict[str, str] | None = None) -> Path:
    """One curve per method through its evaluation checkpoints (alignment on x, diversity on y),
    the last checkpoint marked with a square; the reference as a star. ``panels`` maps each key
    plotted against alignment, one panel each, to its panel's title (default: diversity alone)."""
    panels = panels or {"diversity": ""}
    fig, axes = pyplot().subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), dpi=120, squeeze=False)
    for ax, (key, panel) in zip(axes[0], panels.items()):
        for name, points in trajectories.items():
            xs, ys = [p["alignment"] for p in points], [p[key] for p in points]
            (line,) = ax.plot(xs, ys, marker=".", label=name)
            ax.plot(xs[-1:], ys[-1:], marker="s", color=line.get_color())
        if reference is not None:
            ax.plot([reference["alignment"]], [reference[key]], marker="*", markersize=14, color="black",
                    linestyle="none", label="reference (base model)")
        ax.set_xlabel("alignment (mean reward, held-out prompts)")
        ax.set_ylabel("diversity (mean pairwise cosine distance)")
        ax.set_title(panel or title)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if len(panels) > 1:
        fig.suptitle(title)
    return save_figure(fig, path)


def side_by_side(left: torch.Tensor, right: torch.Tensor, nrow: int, titles: tuple[str, str], path: str | Path,
                 upscale: int = 4) -> Path:
    """Two image grids next to each other with a title above each (e.g. reference | fine-tuned)."""
    fig, axes = pyplot().subplots(1, 2, figsize=(12, 6), dpi=110)
    for ax, images, title in zip(axes, (left, right), titles):
        ax.imshow(image_grid(images, nrow, upscale), cmap="gray", vmin=0, vmax=255)
        ax.set_title(title)
        ax.axis("off")
    return save_figure(fig, path)
