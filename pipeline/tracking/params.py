"""What names and tags a run, before it starts: flat params, the run's name, where its code
and data came from (git, DVC's hash of the prepared data). No MLflow here.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.activations import describe, own_args
from pipeline.tracking.store import DEFAULT_EXPERIMENT

# Keys that do not shape a run's result (the data hash tag covers the checksums; a resumed
# run's params must not change; a trial's place in a search is in its tags).
_UNLOGGED_PARAMS = ("data.idx_sha256", "data.npz_sha256", "train.resume", "search.")


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as flat `a.b` keys, as MLflow shows params."""

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{prefix}{key}.")
        else:
            yield prefix[:-1], node

    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    # Of activation_args, only the chosen activation's own arguments (if any) shaped the run.
    plain["activation_args"] = own_args(cfg.activation.value, plain["activation_args"])
    return {
        key: str(value) for key, value in walk(plain, "") if not key.startswith(_UNLOGGED_PARAMS)
    }


def run_name(cfg: DictConfig) -> str:
    """Says what ran, e.g. `mlp-relu-rmsprop-e5-b128`, `mlp-elu(alpha=0.5)-adam-e5-b128`, and
    on a dataset other than MNIST which: `fashion_mnist-mlp-relu-rmsprop-e5-b128`."""
    activation = describe(cfg.activation.value, cfg.activation_args)
    name = f"{cfg.model.name}-{activation}-{cfg.optimizer.name}-e{cfg.epochs}-b{cfg.batch_size}"
    return name if cfg.data.name == DEFAULT_EXPERIMENT else f"{cfg.data.name}-{name}"


# dvc_dir_md5's results by the files' identity (path, size, mtime, inode): the jobs of a
# sweep share one process and one prepared directory, which need hashing only once.
_dir_md5s: dict[tuple, str] = {}


def dvc_dir_md5(path: Path) -> str:
    """The hash DVC gives a directory output (md5 of its sorted file list), e.g. `ab12...dir`."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    identity = tuple((f, s.st_size, s.st_mtime_ns, s.st_ino) for f in files for s in [f.stat()])
    if identity not in _dir_md5s:
        _dir_md5s[identity] = _hash_dir(path, files)
    return _dir_md5s[identity]


def _hash_dir(path: Path, files: list[Path]) -> str:
    entries = []
    for file in files:
        digest = hashlib.md5()
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        entries.append({"md5": digest.hexdigest(), "relpath": file.relative_to(path).as_posix()})
    listing = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(listing).hexdigest() + ".dir"


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def run_tags(root: Path, prepared: Path, entry_point: str) -> dict[str, str]:
    """Where a run came from: code version, data version, how it was started."""
    tags = {
        "entry_point": entry_point,
        "git_commit": _git(root, "rev-parse", "HEAD") or "unknown",
        "dvc_data_md5": dvc_dir_md5(prepared),
    }
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    if dirty is not None:
        tags["git_dirty"] = str(bool(dirty)).lower()
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags
