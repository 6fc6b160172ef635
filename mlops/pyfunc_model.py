"""The registered models as MLflow pyfuncs, logged as code (MLflow's models-from-code): the
registry stores the reviewed source files in ``mlops/model_code/`` and the artifacts (the trained
parts of a generator on a pinned base, its sampler settings, the preference head in safetensors);
loading a version runs those files and reads the artifacts, and unpickles nothing."""

from __future__ import annotations

import base64
import io
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from drift.config import SamplerSettings

CODE = Path(__file__).parent / "model_code"
GENERATOR_CODE = CODE / "generator.py"
PREFERENCE_HEAD_CODE = CODE / "preference_head.py"

def generator_signature(sampler: SamplerSettings) -> ModelSignature:
    """Prompts (and optionally seeds) in, base64 PNGs out; the sampler's steps, guidance, negative
    prompt and noise level as parameters whose defaults are the run's evaluation sampler settings
    (the names of mlflow.diffusers' pyfunc where they mean the same)."""
    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed", required=False)]),
        outputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed"), ColSpec("string", "image_png_base64")]),
        params=ParamSchema([
            ParamSpec("num_inference_steps", "integer", sampler.num_steps),
            ParamSpec("guidance_scale", "double", sampler.guidance_scale),
            ParamSpec("negative_prompt", "string", sampler.negative_prompt),
            ParamSpec("noise_level", "double", sampler.noise_level),
        ]),
    )


PARAMS = {"num_inference_steps": "num_steps", "guidance_scale": "guidance_scale",
          "negative_prompt": "negative_prompt", "noise_level": "noise_level"}


class DriftImageGenerator(mlflow.pyfunc.PythonModel):
    """Input: columns ``prompt`` and optionally ``seed``. Output: one base64 PNG per row. Artifacts:
    ``trained`` (what the run trained, on a pinned base: drift.models.trained) or, in versions
    registered before that, ``pipeline`` (the whole fused pipeline); ``sampling``, the run's
    evaluation SamplerSettings. A local base that is not at its recorded path is passed as
    ``model_config={"base_model": DIR}`` to ``mlflow.pyfunc.load_model``."""

    def load_context(self, context):
        from drift.models import load_model

        self.sampler = SamplerSettings.model_validate_json(Path(context.artifacts["sampling"]).read_text())
        model_dir = context.artifacts.get("trained") or context.artifacts["pipeline"]
        base = (context.model_config or {}).get("base_model")
        self.model = load_model(model_dir, base=base, **self.sampler.model_options.model_dump())

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from drift.plots import to_pil
        from drift.sampling.rollout import sample_groups

        prompts = model_input["prompt"].astype(str).tolist()
        seeds = model_input["seed"].astype("int64").tolist() if "seed" in model_input else list(range(len(prompts)))
        chosen = {PARAMS[k]: v for k, v in (params or {}).items() if k in PARAMS}
        sampler = SamplerSettings.model_validate({**self.sampler.model_dump(), **chosen})
        images = sample_groups(self.model, prompts, 1, torch.tensor(seeds), sampler).images
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
