"""The registered models as MLflow pyfuncs, logged as code (MLflow's models-from-code): the
registry stores the reviewed source files in ``mlops/model_code/`` and the artifacts (diffusers
pipeline directory, sampler settings, preference head in safetensors); loading a version runs
those files and reads the artifacts, and unpickles nothing."""

from __future__ import annotations

import base64
import io
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

CODE = Path(__file__).parent / "model_code"
GENERATOR_CODE = CODE / "generator.py"
PREFERENCE_HEAD_CODE = CODE / "preference_head.py"

GENERATOR_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed", required=False)]),
    outputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed"), ColSpec("string", "image_png_base64")]),
)


class DriftImageGenerator(mlflow.pyfunc.PythonModel):
    """Input: columns ``prompt`` and optionally ``seed``. Output: one base64 PNG per row."""

    def load_context(self, context):
        from drift.config import SamplerSettings
        from drift.models import load_model

        # The sampling artifact: the run's evaluation SamplerSettings (model_dump JSON).
        self.sampler = SamplerSettings.model_validate_json(Path(context.artifacts["sampling"]).read_text())
        self.model = load_model(context.artifacts["pipeline"], **self.sampler.model_options.model_dump())

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from drift.plots import to_pil
        from drift.sampling.rollout import sample_groups

        prompts = model_input["prompt"].astype(str).tolist()
        seeds = model_input["seed"].astype("int64").tolist() if "seed" in model_input else list(range(len(prompts)))
        images = sample_groups(self.model, prompts, 1, torch.tensor(seeds), self.sampler).images
        encoded = []
        for img in images:
            buf = io.BytesIO()
            to_pil(img).save(buf, format="PNG")
            encoded.append(base64.b64encode(buf.getvalue()).decode())
        return pd.DataFrame({"prompt": prompts, "seed": seeds, "image_png_base64": encoded})


class PreferenceHeadModel(mlflow.pyfunc.PythonModel):
    """Scores feature vectors (one row per image, the embedding's dimensions as columns)."""

    def load_context(self, context):
        from drift.scoring.preference_head import load_head

        self.head = load_head(context.artifacts["head"])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        with torch.no_grad():
            return self.head(torch.tensor(model_input.to_numpy(), dtype=torch.float32)).numpy()


def requirements() -> list[str]:
    return [f"{p}=={version(p)}" for p in ("torch", "diffusers", "transformers", "peft", "pandas", "pillow",
                                           "safetensors")]
