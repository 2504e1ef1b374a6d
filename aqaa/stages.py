"""Stage runners: resolve a stage's artifact from the config, reuse it or build it.

Each runner returns the artifact directory. Only the config a stage depends on goes
into its key, so changing e.g. ``corpus.workers`` (how, not what) reuses the corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

from .artifacts import Artifact, ArtifactStore
from .config import ExperimentConfig, to_dict

# Bump when a stage's code changes what it writes, so old artifacts are not reused.
CORPUS_VERSION = 1
IMPORT_VERSION = 1


def store_for(cfg: ExperimentConfig) -> ArtifactStore:
    return ArtifactStore(cfg.paths.checkpoints)


def corpus_spec(cfg: ExperimentConfig) -> dict:
    spec = to_dict(cfg.corpus)
    spec.pop("workers")  # parallelism does not change the output
    return {"version": CORPUS_VERSION, **spec}


def run_corpus(cfg: ExperimentConfig, force: bool = False, progress: bool = True, log=print) -> Artifact:
    from .corpus.build import build_corpus

    store = store_for(cfg)
    spec = corpus_spec(cfg)
    art = store.resolve("corpus", spec)
    if art.complete and not force:
        log(f"corpus: reusing {art.path}")
    else:
        work = store.begin(art)
        log(f"corpus: building into {art.path}")
        stats = build_corpus(cfg.corpus, work, progress=progress)
        (work / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        store.commit(art, work, spec, config=cfg)
    store.update_latest(corpus=art)
    return art


def run_import(cfg: ExperimentConfig, manifest: Path, skip_bad: bool = False, log=print) -> tuple[Artifact, dict]:
    """Import a user's manifest as a corpus artifact (keyed by the manifest's content)."""
    import hashlib

    from .corpus.manifest import ManifestError, import_manifest

    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"manifest not found: {manifest}")
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    spec = {"version": IMPORT_VERSION, "manifest": str(manifest.resolve()), "sha256": digest,
            "skip_bad": skip_bad, "max_seconds": cfg.corpus.max_seconds}
    store = store_for(cfg)
    art = store.resolve("corpus", spec)
    if art.complete:
        log(f"import: reusing {art.path}")
        report = json.loads((art.path / "stats.json").read_text())["import"]
    else:
        work = store.begin(art)
        report = import_manifest(manifest, work, cfg.corpus.max_seconds, skip_bad=skip_bad)
        stats = {"import": report, "counts": _counts(work)}
        (work / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        store.commit(art, work, spec, config=cfg)
    store.update_latest(corpus=art)
    return art, report


def _counts(corpus_dir: Path) -> dict:
    from .corpus.manifest import SPLITS, read_dialogues

    out = {}
    for s in SPLITS:
        c: dict[str, int] = {}
        for d in read_dialogues(corpus_dir, s):
            c[d.category] = c.get(d.category, 0) + 1
        out[s] = c
    return out
