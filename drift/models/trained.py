"""A fine-tuned model as a run stores it: what training changed, and a reference that pins the rest.

    directory/
        trained.json                        the manifest: family, what was trained, the base reference
        pytorch_lora_weights.safetensors    LoRA runs: the adapters in diffusers' LoRA format, which
                                            a pipeline of the base loads with ``load_lora_weights``
        <denoiser>/                         full fine-tunes: the denoiser alone (save_pretrained)

The frozen parts (text encoders, VAE, and for LoRA the denoiser's own weights) are not copied: the
base is a hub id with its resolved revision (commit hash), or a local directory by the SHA-256 of its
contents. A stored reference holds no absolute path of the training machine: a local base is named
by its path relative to the working directory (or by its folder name), and found again either there
(a checkout with the DVC-tracked testbed, for example) or by the ``locate`` function a caller passes
(mlops.artifacts finds it in the artifact store by its digest). A base that is missing, or whose
revision or contents differ from the recorded ones, stops the load with a message naming both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from drift.data.provenance import content_digest
from drift.errors import ModelNotFoundError, UnsupportedModelError

MANIFEST = "trained.json"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
FORMAT = "drift-trained-model/1"


class BaseReference(BaseModel):
    """The frozen base a model was fine-tuned from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    """A hub id, or a local directory's path relative to the working directory (its name when it
    lies outside)."""
    revision: str | None = None
    """Hub models: the commit the base was loaded at."""
    digest: str | None = None
    """Local directories: the SHA-256 of their contents (drift.data.provenance.content_digest)."""

    @property
    def is_local(self) -> bool:
        return self.digest is not None

    def describe(self) -> str:
        return f"{self.source} at revision {self.revision}" if not self.is_local else f"{self.source} ({self.digest})"


class TrainedManifest(BaseModel):
    """trained.json: what a trained-model directory holds."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    family: str
    """The sampler family the model was trained with ('flow' or 'eps')."""
    trained: str
    """'lora' (the adapters) or 'full' (the whole denoiser)."""
    denoiser: str
    """The pipeline attribute of the denoiser: unet, transformer."""
    base: BaseReference


BaseLocator = Callable[[BaseReference], "Path | None"]
"""Where a local base can be found when it is not at its recorded path: a function of the reference
returning a directory (checked against the digest), or None."""


def _portable(path: Path) -> str:
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return resolved.name


def hub_revision(repo_id: str, revision: str | None) -> str:
    """The commit of ``repo_id`` at ``revision`` in the local Hugging Face cache, where loading the
    pipeline put it."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True)).name
    except Exception as err:  # the hub client raises several types for a missing cache entry
        raise ModelNotFoundError(f"cannot resolve the revision of base model {repo_id} ({revision or 'main'}) in the "
                                 f"Hugging Face cache: {type(err).__name__}: {err}") from err


def read_manifest(directory: str | Path) -> TrainedManifest | None:
    """The manifest of a trained-model directory; None for anything else (a whole pipeline, a hub id)."""
    path = Path(directory) / MANIFEST
    return TrainedManifest.model_validate_json(path.read_text()) if path.is_file() else None


def reference_base(source: str, revision: str | None = None) -> BaseReference:
    """The reference that pins ``source``: its resolved revision for a hub id, the digest of its
    contents for a local directory."""
    path = Path(source)
    if read_manifest(path) is not None:
        raise UnsupportedModelError(f"model.source {source} is a model a run wrote (trained parts of another base): "
                                    "fine-tune from its base model instead")
    if path.is_dir():
        return BaseReference(source=_portable(path), digest=content_digest(path))
    return BaseReference(source=source, revision=hub_revision(source, revision))


def locate_base(reference: BaseReference, configured: str | None = None,
                locate: BaseLocator | None = None) -> tuple[str, str | None]:
    """(what to load, revision) for the base: the hub id at the recorded revision, or a local
    directory whose contents match the recorded digest: ``configured`` (the run configuration's
    model.source, where a caller has one), the recorded path, or where ``locate`` finds it."""
    if not reference.is_local:
        return reference.source, reference.revision
    candidates = [Path(p) for p in dict.fromkeys(filter(None, [configured, reference.source]))]
    if locate is not None:
        candidates.append(locate(reference))
    found = []
    for candidate in candidates:
        if candidate is None or not candidate.is_dir():
            continue
        digest = content_digest(candidate)
        if digest == reference.digest:
            return str(candidate), None
        found.append(f"{candidate} has {digest}")
    if found:
        raise ModelNotFoundError(f"the base model changed since training: expected {reference.source} with contents "
                                 f"{reference.digest}, found {'; '.join(found)}. Restore the base the model was "
                                 "trained on (dvc checkout, or the artifact store's copy), or train again on this one.")
    raise ModelNotFoundError(f"the base model {reference.source} ({reference.digest}) is not available here: pass "
                             "it as model.source, run from a checkout where it exists at that path (dvc pull or dvc "
                             "repro for the testbed), or on a stack whose artifact store holds its copy (the "
                             "fine-tuning step writes one).")


def lora_layers(denoiser: torch.nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(denoiser)


def save_trained(model, directory: str | Path, base: BaseReference) -> Path:
    """Write what ``model`` (a T2IModel) trained and the base reference into ``directory``: its LoRA
    adapters in diffusers' format, or its whole denoiser."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    denoiser, attr = model.denoiser, model.denoiser_attr
    lora = bool(getattr(denoiser, "peft_config", None))
    if lora:
        save_lora = getattr(type(model.pipe), "save_lora_weights", None)
        if save_lora is None:
            raise UnsupportedModelError(f"{type(model.pipe).__name__} cannot save LoRA adapters (no save_lora_weights)")
        save_lora(directory, **{f"{attr}_lora_layers": lora_layers(denoiser),
                                f"{attr}_lora_adapter_metadata": denoiser.peft_config["default"].to_dict()})
    else:
        denoiser.save_pretrained(directory / attr)
    manifest = TrainedManifest(family=model.family, trained="lora" if lora else "full", denoiser=attr, base=base)
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=1))
    return directory




def load_trained_pipeline(directory: str | Path, manifest: TrainedManifest, dtype: torch.dtype,
                          configured: str | None = None, locate: BaseLocator | None = None, **components):
    """The base pipeline with the trained part applied: the adapters loaded (unfused, as trained) or
    the fine-tuned denoiser in place of the base's. ``configured`` and ``locate`` as in ``locate_base``;
    ``components`` replace pipeline components (None for an absent one)."""
    from drift.models.loading import load_pipeline

    source, revision = locate_base(manifest.base, configured, locate)
    if manifest.trained == "full":
        denoiser_dir = Path(directory) / manifest.denoiser
        class_name = json.loads((denoiser_dir / "config.json").read_text())["_class_name"]
        import diffusers

        components[manifest.denoiser] = getattr(diffusers, class_name).from_pretrained(denoiser_dir, torch_dtype=dtype)
        return load_pipeline(source, revision, dtype, **components)
    pipe = load_pipeline(source, revision, dtype, **components)
    pipe.load_lora_weights(str(directory), weight_name=LORA_WEIGHTS)
    return pipe
