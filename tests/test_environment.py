"""The environment the README builds: the libraries import together and torchvision matches torch."""

import subprocess
import sys


def test_stack_imports_together():
    code = "import torch, torchvision, open_clip, diffusers, transformers, zenml, mlflow, dvc, great_expectations"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_open_clip_builds_with_torchvision_ops():
    # The torchvision trap: a CPU-only torch beside a CUDA torchvision fails here.
    import open_clip
    import torch

    model = open_clip.create_model("ViT-B-32", pretrained=None)
    with torch.no_grad():
        out = model.encode_image(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 512)


def test_drift_console_script_help():
    bin_dir = __import__("pathlib").Path(sys.executable).parent
    result = subprocess.run([str(bin_dir / "drift"), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "Usage: drift" in result.stdout
