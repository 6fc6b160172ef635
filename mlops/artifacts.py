"""The fine-tuned model as a ZenML artifact: a diffusers pipeline directory stored file by file in
the artifact store (local, S3, GCS, ... through ZenML's fileio), with a grid of its samples as the
preview the dashboard shows. Steps on other machines load it from the store, never from another
step's local disk."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image
from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

PIPELINE_DIR, PREVIEW = "pipeline", "preview.png"


@dataclass
class PipelineArtifact:
    """A diffusers pipeline directory (loadable with ``drift.models.load_model``).

    ``preview``: sample images of the model as one grid image. ``temporary``: the directory is a
    scratch copy that saving the artifact consumes (the store's copy replaces it).
    """

    directory: Path
    preview: Image.Image | None = None
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


class PipelineMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (PipelineArtifact,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: PipelineArtifact) -> None:
        _copy_tree(str(data.directory), os.path.join(self.uri, PIPELINE_DIR))
        if data.preview is not None:
            with self.get_temporary_directory(delete_at_exit=True) as tmp:
                data.preview.save(os.path.join(tmp, PREVIEW))
                fileio.copy(os.path.join(tmp, PREVIEW), os.path.join(self.uri, PREVIEW), overwrite=True)
        if data.temporary:
            shutil.rmtree(data.directory, ignore_errors=True)

    def load(self, data_type: type[Any]) -> PipelineArtifact:
        # Kept until the consuming step finishes, then deleted by ZenML.
        with self.get_temporary_directory(delete_at_exit=False) as local:
            _copy_tree(os.path.join(self.uri, PIPELINE_DIR), local)
            return PipelineArtifact(directory=Path(local))

    def save_visualizations(self, data: PipelineArtifact) -> dict[str, VisualizationType]:
        preview = os.path.join(self.uri, PREVIEW)
        return {preview: VisualizationType.IMAGE} if fileio.exists(preview) else {}

    def extract_metadata(self, data: PipelineArtifact) -> dict[str, Any]:
        index = os.path.join(self.uri, PIPELINE_DIR, "model_index.json")
        if not fileio.exists(index):
            return {}
        with fileio.open(index, "r") as f:
            return {"pipeline_class": json.load(f).get("_class_name", "unknown")}
