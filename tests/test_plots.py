"""Figures are written as readable PNG files of the expected size."""

import torch
from PIL import Image

from drift.plots import image_grid, side_by_side, trajectory_plot


def test_image_grid_layout():
    grid = image_grid(torch.rand(6, 1, 8, 8), nrow=3, upscale=2)
    assert grid.size == (3 * 16 + 4 * 2, 2 * 16 + 3 * 2)


def test_figures_are_png(tmp_path):
    traj = [{"alignment": 1.0, "diversity": 0.5}, {"alignment": 2.0, "diversity": 0.3}]
    for path in (trajectory_plot({"grpo": traj}, tmp_path / "t.png", reference=traj[0]),
                 side_by_side(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8), 2, ("a", "b"), tmp_path / "s.png")):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 300
