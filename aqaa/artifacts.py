"""Artifact directories keyed by the hash of the configuration they depend on.

``checkpoints/<stage>-<hash>/`` is complete when it holds ``artifact.json``. Work happens
in ``checkpoints/.partial/<stage>-<hash>/`` and the directory is renamed into place when
done, so a crash never leaves something that looks complete. A training stage may keep
its partial directory to resume from; other stages start over.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import config_hash, to_yaml

MARKER = "artifact.json"
PARTIAL = ".partial"
LATEST = "latest.json"


@dataclass
class Artifact:
    stage: str
    key: str
    path: Path  # final location

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.key}"

    @property
    def complete(self) -> bool:
        return (self.path / MARKER).is_file()

    def info(self) -> dict:
        return json.loads((self.path / MARKER).read_text())


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def resolve(self, stage: str, spec: Any, upstream: dict[str, "Artifact | Path | str"] | None = None) -> Artifact:
        """Where the artifact of ``stage`` for this spec (and these inputs) lives."""
        ups = {k: (v.name if isinstance(v, Artifact) else Path(v).name) for k, v in (upstream or {}).items()}
        return Artifact(stage, config_hash(stage, spec, ups), self.root / f"{stage}-{config_hash(stage, spec, ups)}")

    def partial_dir(self, art: Artifact) -> Path:
        return self.root / PARTIAL / art.name

    def begin(self, art: Artifact, resume: bool = False) -> Path:
        """A fresh (or, with ``resume``, the previous) partial directory for ``art``."""
        work = self.partial_dir(art)
        if work.exists() and not resume:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        return work

    def commit(
        self,
        art: Artifact,
        work: Path,
        spec: Any,
        config: Any = None,
        upstream: dict[str, Any] | None = None,
        extra: dict | None = None,
    ) -> Path:
        """Mark ``work`` complete and move it into place atomically."""
        if config is not None:
            (work / "config.yaml").write_text(to_yaml(config))
        info = {
            "stage": art.stage,
            "key": art.key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "spec": spec if isinstance(spec, (dict, list, str, int, float)) else _plain(spec),
            "upstream": {k: str(v.path if isinstance(v, Artifact) else v) for k, v in (upstream or {}).items()},
            **(extra or {}),
        }
        write_json_atomic(work / MARKER, info)
        if art.path.exists():  # a stale incomplete leftover: never reused, replaced
            shutil.rmtree(art.path)
        os.rename(work, art.path)
        return art.path

    # ----- latest.json -------------------------------------------------------------
    def update_latest(self, **stages: Path | Artifact) -> Path:
        """Record the artifact directory of each given stage in ``latest.json``."""
        path = self.root / LATEST
        data = json.loads(path.read_text()) if path.exists() else {}
        for stage, where in stages.items():
            data[stage] = str(where.path if isinstance(where, Artifact) else where)
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, data)
        return path

    def latest(self, stage: str) -> Path | None:
        path = self.root / LATEST
        if not path.exists():
            return None
        where = json.loads(path.read_text()).get(stage)
        return Path(where) if where else None


def _plain(obj: Any) -> Any:
    from .config import to_dict

    return to_dict(obj)
