"""Artifact directories keyed by the hash of the configuration they depend on.

``checkpoints/<stage>-<hash>/`` is complete when it holds ``artifact.json``. Work happens
in ``checkpoints/.partial/<stage>-<hash>/`` and the directory is renamed into place when
done, so a crash never leaves something that looks complete. A training stage may keep
its partial directory to resume from; other stages start over.

Several processes may share one store (sweep workers): resolving an incomplete artifact
takes an exclusive lock on building it, held until ``commit``, so a second process waits
for the first and then reuses its result instead of writing into the same directory.
"""

from __future__ import annotations

import fcntl
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
LOCKS = ".locks"
LATEST = "latest.json"

# Build locks this process holds: lock file -> descriptor. flock is per open file, so a
# process re-resolving an artifact whose build it abandoned (a failed trial) must not
# lock it twice.
_HELD: dict[str, int] = {}


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
    def __init__(self, root: str | Path, latest: str = LATEST):
        self.root = Path(root)
        self.latest_path = self.root / latest

    def resolve(self, stage: str, spec: Any, upstream: dict[str, "Artifact | Path | str"] | None = None) -> Artifact:
        """Where the artifact of ``stage`` for this spec (and these inputs) lives. If it is not
        complete, this process takes the lock on building it (waiting while another process
        builds it; then it is complete and the lock is given back)."""
        ups = {k: (v.name if isinstance(v, Artifact) else Path(v).name) for k, v in (upstream or {}).items()}
        key = config_hash(stage, spec, ups)
        art = Artifact(stage, key, self.root / f"{stage}-{key}")
        if not art.complete and _is_rank_zero():
            self._lock(art)
            if art.complete:  # built by another process while we waited
                self.release(art)
        return art

    def _lock_path(self, art: Artifact) -> str:
        # Never deleted: removing a lock file another process waits on would let a third
        # process lock a new file of the same name while the waiter locks the old one.
        return str(self.root / LOCKS / f"{art.name}.lock")

    def _lock(self, art: Artifact) -> None:
        path = self._lock_path(art)
        if path in _HELD:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # the OS drops it if this process dies
        _HELD[path] = fd

    def release(self, art: Artifact) -> None:
        """Give back the build lock on ``art`` (done by ``commit``; call it after a failed build)."""
        fd = _HELD.pop(self._lock_path(art), None)
        if fd is not None:
            _unlock(fd)

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
        if art.path.exists():  # a stale incomplete leftover (or a forced rebuild): replaced
            shutil.rmtree(art.path)
        os.rename(work, art.path)
        self.release(art)
        return art.path

    # ----- latest.json -------------------------------------------------------------
    def update_latest(self, **stages: Path | Artifact) -> Path:
        """Record the artifact directory of each given stage in ``latest.json``."""
        path = self.latest_path
        data = json.loads(path.read_text()) if path.exists() else {}
        for stage, where in stages.items():
            data[stage] = str(where.path if isinstance(where, Artifact) else where)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, data)
        return path

    def latest(self, stage: str) -> Path | None:
        path = self.latest_path
        if not path.exists():
            return None
        where = json.loads(path.read_text()).get(stage)
        return Path(where) if where else None


def release_all() -> None:
    """Give back every build lock this process holds (after a failed sweep trial)."""
    for fd in _HELD.values():
        _unlock(fd)
    _HELD.clear()


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _is_rank_zero() -> bool:
    # Under DDP/FSDP every rank resolves the same artifacts; rank 0 builds them (the others
    # would wait on its lock forever).
    return all(os.environ.get(k, "0") in ("", "0") for k in ("RANK", "LOCAL_RANK"))


def _plain(obj: Any) -> Any:
    from .config import to_dict

    return to_dict(obj)
