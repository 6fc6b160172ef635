"""The fine-tuned model as a ZenML artifact: what the run trained (drift.models.trained: LoRA
adapters or the fine-tuned denoiser, and the reference that pins the base), stored file by file in
the artifact store (local, S3, GCS, ... through ZenML's fileio), with a grid of its samples as the
preview the dashboard shows. Steps on other machines load it from the store, never from another
step's local disk, and rebuild the model from its base.

A hub base is downloaded where it is loaded (its revision pinned). A local base directory reaches
other machines through the artifact store: the first artifact trained on it copies it, once per
content digest, to ``<store>/drift-bases/<digest>/`` (``<digest>.complete`` beside it written last), and
``base_from_store`` finds it there for ``drift.models.load_model``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image
from zenml.client import Client
from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from drift.models.trained import MANIFEST, BaseReference, read_manifest

MODEL_DIR, PREVIEW = "model", "preview.png"
BASES, COMPLETE = "drift-bases", ".complete"


@dataclass
class ModelArtifact:
    """A trained-model directory (``drift.models.load_model`` opens it, given its base).

    ``preview``: sample images of the model as one grid image. ``base_dir``: where a local base is on
    the machine that saves the artifact, so that the artifact store gets its one copy. ``temporary``:
    the directory is a scratch copy that saving the artifact consumes.
    """

    directory: Path
    preview: Image.Image | None = None
    base_dir: Path | None = None
    temporary: bool = False


def _copy_tree(src: str, dst: str) -> None:
    """Copy a directory tree file by file between any two fileio locations."""
    for root, _, files in fileio.walk(src):
        root = root.decode() if isinstance(root, bytes) else str(root)
        target = os.path.join(dst, os.path.relpath(root, src))
        fileio.makedirs(target)
        for name in files:
            name = name.decode() if isinstance(name, bytes) else str(name)
            fileio.copy(os.path.join(root, name), os.path.join(target, name), overwrite=True)


def _store_base_path(reference: BaseReference) -> str:
    return os.path.join(Client().active_stack.artifact_store.path, BASES, reference.digest)


def store_base(reference: BaseReference, directory: Path) -> None:
    """Copy a local base into the artifact store, once per digest; the marker that the copy is
    complete lies beside it (inside, it would change the copy's digest)."""
    target = _store_base_path(reference)
    if fileio.exists(target + COMPLETE):
        return
    _copy_tree(str(directory), target)
    with fileio.open(target + COMPLETE, "w") as f:
        f.write(reference.source)


def base_from_store(reference: BaseReference) -> Path | None:
    """The artifact store's copy of a local base (drift.models.trained.BaseLocator): the store's own
    folder when the store is a local directory, else a local copy (kept for the process's later loads)."""
    target = _store_base_path(reference)
    if not fileio.exists(target + COMPLETE):
        return None
    if os.path.isdir(target):
        return Path(target)
    local = Path(tempfile.gettempdir()) / BASES / reference.digest
    if not Path(str(local) + COMPLETE).is_file():
        shutil.rmtree(local, ignore_errors=True)
        _copy_tree(target, str(local))
        Path(str(local) + COMPLETE).write_text(reference.source)
    return local


class ModelMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (ModelArtifact,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: ModelArtifact) -> None:
        _copy_tree(str(data.directory), os.path.join(self.uri, MODEL_DIR))
        manifest = read_manifest(data.directory)
        if manifest is not None and manifest.base.is_local and data.base_dir is not None:
            store_base(manifest.base, data.base_dir)
        if data.preview is not None:
            with self.get_temporary_directory(delete_at_exit=True) as tmp:
                data.preview.save(os.path.join(tmp, PREVIEW))
                fileio.copy(os.path.join(tmp, PREVIEW), os.path.join(self.uri, PREVIEW), overwrite=True)
        if data.temporary:
            shutil.rmtree(data.directory, ignore_errors=True)

    def load(self, data_type: type[Any]) -> ModelArtifact:
        # Kept until the consuming step finishes, then deleted by ZenML.
        with self.get_temporary_directory(delete_at_exit=False) as local:
            _copy_tree(os.path.join(self.uri, MODEL_DIR), local)
            return ModelArtifact(directory=Path(local))

    def save_visualizations(self, data: ModelArtifact) -> dict[str, VisualizationType]:
        preview = os.path.join(self.uri, PREVIEW)
        return {preview: VisualizationType.IMAGE} if fileio.exists(preview) else {}

    def extract_metadata(self, data: ModelArtifact) -> dict[str, Any]:
        path = os.path.join(self.uri, MODEL_DIR, MANIFEST)
        if not fileio.exists(path):
            return {}
        with fileio.open(path, "r") as f:
            manifest = json.load(f)
        return {"trained": manifest["trained"], "base_model": manifest["base"]["source"],
                "base_pin": manifest["base"].get("revision") or manifest["base"].get("digest")}
