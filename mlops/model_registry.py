"""MLflow Model Registry helpers shared by the register steps: log a pyfunc from code, register
a version with its tags, read aliases, download registered versions."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from drift.config import SamplerSettings
from drift.errors import DriftError
from drift.models.trained import LORA_WEIGHTS, BaseReference, read_manifest
from mlops.pyfunc_model import GENERATOR_CODE, generator_signature, requirements


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _register(info, name: str, tags: dict) -> str:
    # The tags are written with the version, in one transaction: a run killed here leaves either no
    # version or one that says everything a later decision needs.
    return mlflow.register_model(info.model_uri, name, tags={k: str(v) for k, v in tags.items()}).version


def register_version(name: str, code: Path, artifacts: dict[str, str], tags: dict,
                     signature=None, artifact_path: str = "model") -> str:
    """Log the pyfunc defined by the source file ``code`` with ``artifacts`` in the active run,
    register it as a new version of ``name``, tag it, and return the version."""
    info = mlflow.pyfunc.log_model(name=artifact_path, python_model=str(code), artifacts=artifacts,
                                   signature=signature, pip_requirements=requirements())
    return _register(info, name, tags)


class _GeneratorWithAdapter:
    """The generator pyfunc (models from code), plus MLflow's own ``diffusers`` flavor for LoRA
    versions: the flavor's adapter folder is the pyfunc's ``trained`` artifact (diffusers' LoRA
    format), so the adapters are stored once and ``mlflow.diffusers.load_model(uri).load_pipeline()``
    gives the base pipeline with them applied. Used as ``Model.log``'s flavor."""

    __name__ = "mlflow.pyfunc"

    @staticmethod
    def save_model(path, mlflow_model: Model, base: BaseReference | None = None, **pyfunc_options):
        import diffusers

        mlflow.pyfunc.save_model(path=path, mlflow_model=mlflow_model, **pyfunc_options)
        if base is None:
            return
        trained = mlflow_model.flavors["python_function"]["artifacts"]["trained"]["path"]
        mlflow_model.add_flavor("diffusers", base_model=base.source, adapter_type="lora", adapter_weights=trained,
                                weight_name=LORA_WEIGHTS, diffusers_version=diffusers.__version__,
                                **({"base_model_revision": base.revision} if base.revision else {}))
        mlflow_model.save(str(Path(path) / "MLmodel"))


def register_generator(name: str, trained_dir: Path, sampler: SamplerSettings,
                       tags: dict) -> str:
    """Log the generator (what the run trained, on its pinned base, and the sampler settings it is
    evaluated with) in the active run, with the diffusers flavor when it trained LoRA adapters;
    register it as a new version of ``name``, tag it, and return the version."""
    manifest = read_manifest(trained_dir)
    with tempfile.TemporaryDirectory(prefix="drift-sampling-") as tmp:
        sampling = Path(tmp) / "sampling.json"
        sampling.write_text(sampler.model_dump_json())
        info = Model.log(artifact_path=None, name="model", flavor=_GeneratorWithAdapter,
                         flavor_name="pyfunc.ModelFromCode", python_model=str(GENERATOR_CODE),
                         artifacts={"trained": str(trained_dir), "sampling": str(sampling)},
                         signature=generator_signature(sampler), pip_requirements=requirements(),
                         model_config={"base_model": None},  # where a local base is, given at load time
                         base=manifest.base if manifest.trained == "lora" else None)
    return _register(info, name, tags)


@dataclass
class RegisteredGenerator:
    """A downloaded version of a registered generator: its model directory (what the run trained on
    a pinned base, or for versions registered before that the whole pipeline: ``load_model`` opens
    both) and the sampler settings it was registered with."""

    name: str
    version: str
    model_dir: Path
    sampler: SamplerSettings


def download_version(tracking_uri: str, name: str, version: str, dst: str | Path, needs: set[str],
              kind: str) -> tuple[Path, dict[str, Path]]:
    """Version ``version`` of ``name`` downloaded into ``dst``: its folder and its pyfunc artifacts
    by name, which must include ``needs`` (else it is not a ``kind``)."""
    source = MlflowClient(tracking_uri, tracking_uri).get_model_version_download_uri(name, version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=tracking_uri))
    artifacts = Model.load(str(local)).flavors.get("python_function", {}).get("artifacts") or {}
    if not needs <= artifacts.keys():
        raise DriftError(f"{name} version {version} is not a registered {kind} (its artifacts are "
                         f"{sorted(artifacts)}, expected {', '.join(sorted(needs))})")
    return local, {key: local / entry["path"] for key, entry in artifacts.items()}


def download_generator(tracking_uri: str, name: str, version: str, dst: str | Path) -> RegisteredGenerator:
    """Version ``version`` of the registered generator ``name``, downloaded into ``dst``."""
    _, artifacts = download_version(tracking_uri, name, version, dst, {"sampling"}, "DRIFT generator")
    model_dir = artifacts.get("trained") or artifacts.get("pipeline")
    if model_dir is None:
        raise DriftError(f"{name} version {version} is not a registered DRIFT generator (no 'trained' or 'pipeline' "
                         "artifact)")
    return RegisteredGenerator(name, version, model_dir, SamplerSettings.model_validate_json(
        artifacts["sampling"].read_text()))
