"""A reward term packaged to travel: its name and arguments as JSON in a directory, with the local
files its arguments name stored beside it when small, or referenced by path and content digest when
large; other arguments (hub ids, open_clip tags, numbers) are references as given. The registered
reward model is such a directory (mlops.pyfunc_model.RewardModel serves it), so the term that
scored in training scores the same wherever the directory goes.

    term.json   {"name": "preference", "args": {"head": {"$stored": "head"}, "embedding": "digit_features",
                 "embedding_args": {"checkpoint": {"$stored": "embedding_args.checkpoint"}}}}
    head/  embedding_args.checkpoint/      the stored copies, as given (safetensors and JSON)

A large local file is referenced as {"$path": "/models/x", "$digest": "sha256:..."}: loading checks
that the file there is still the one that was packaged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from drift.errors import ModelNotFoundError
from drift.evaluation.protocol import fingerprint
from drift.registry import REWARDS
from drift.scoring.protocols import Reward

SPEC = "term.json"
STORE_LIMIT = 256 * 2**20  # bytes: a local file or directory above this is referenced, not copied


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def package_term(name: str, args: dict, dst: str | Path) -> Path:
    """Write the term ``name(**args)`` into the new directory ``dst``; returns ``dst``."""
    dst = Path(dst)
    dst.mkdir(parents=True)

    def pack(value, key: str):
        if isinstance(value, dict):
            return {k: pack(v, f"{key}.{k}" if key else k) for k, v in value.items()}
        if isinstance(value, list):
            return [pack(v, f"{key}.{i}") for i, v in enumerate(value)]
        if isinstance(value, str) and value and Path(value).exists():
            path = Path(value).resolve()
            if _size(path) > STORE_LIMIT:
                return {"$path": str(path), "$digest": fingerprint(str(path))}
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, dst / key)
            return {"$stored": key}
        return value

    (dst / SPEC).write_text(json.dumps({"name": name, "args": pack(args, "")}, indent=2))
    return dst


def packaged_args(src: str | Path) -> tuple[str, dict]:
    """The packaged term's name and its arguments with every file reference made a local path."""
    src = Path(src)
    spec = json.loads((src / SPEC).read_text())

    def unpack(value):
        if isinstance(value, dict) and "$stored" in value:
            return str(src / value["$stored"])
        if isinstance(value, dict) and "$path" in value:
            found = fingerprint(value["$path"])
            if found != value["$digest"]:
                state = f"has digest {found}" if Path(value["$path"]).exists() else "is missing"
                raise ModelNotFoundError(f"the reward term packaged in {src} references {value['$path']} with digest "
                                         f"{value['$digest']}, but that file {state}: put the packaged file there")
            return value["$path"]
        if isinstance(value, dict):
            return {k: unpack(v) for k, v in value.items()}
        if isinstance(value, list):
            return [unpack(v) for v in value]
        return value

    return spec["name"], unpack(spec["args"])


def load_packaged(src: str | Path, device="cpu") -> Reward:
    name, args = packaged_args(src)
    return REWARDS.build(name, device=device, **args)


def package_digest(src: str | Path) -> str:
    """The content digest of a package (its spec and stored files), what its server reports."""
    return fingerprint(str(src))
