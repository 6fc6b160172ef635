"""The registered model: an MLflow pyfunc that generates images from a DataFrame of prompts."""

from __future__ import annotations

import base64
import io
import json
from importlib.metadata import version

import mlflow
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed", required=False)]),
    outputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed"), ColSpec("string", "image_png_base64")]),
)


class DriftImageGenerator(mlflow.pyfunc.PythonModel):
    """Input: columns ``prompt`` and optionally ``seed``. Output: one base64 PNG per row."""

    def load_context(self, context):
        from drift.models import load_model

        self.model = load_model(context.artifacts["pipeline"])
        with open(context.artifacts["sampling"]) as f:
            self.sampling = json.load(f)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from drift.plots import to_pil
        from drift.rollout import rollout

        prompts = model_input["prompt"].astype(str).tolist()
        seeds = model_input["seed"].astype("int64").tolist() if "seed" in model_input else list(range(len(prompts)))
        s = self.sampling
        ro = rollout(self.model, prompts, 1, torch.tensor(seeds), s["num_steps"], s["noise_level"], s["guidance_scale"])
        encoded = []
        for img in ro.images:
            buf = io.BytesIO()
            to_pil(img).save(buf, format="PNG")
            encoded.append(base64.b64encode(buf.getvalue()).decode())
        return pd.DataFrame({"prompt": prompts, "seed": seeds, "image_png_base64": encoded})


def requirements() -> list[str]:
    return [f"{p}=={version(p)}" for p in ("torch", "diffusers", "transformers", "peft", "pandas", "pillow")]
