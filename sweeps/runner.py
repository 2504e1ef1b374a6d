"""``aqaa sweep STUDY``: run an ablation study with Optuna, each trial a pipeline run.

- Storage: SQLite under ``checkpoints/`` by default; a path ending in ``.log`` or
  ``.journal`` is an Optuna journal file (several workers on one machine or NFS); anything
  with ``://`` is an SQLAlchemy URL (PostgreSQL for workers on many machines).
- ``--workers K`` runs K processes on the study. Artifacts every trial shares are built
  once, before any worker starts; the artifact store's build locks cover the rest.
- A trial that raises is recorded as failed and the study goes on. A trial whose process
  was killed is found on the next run (its worker's pid is gone, or, on an RDB storage,
  its heartbeat stopped), marked failed and re-queued with the same parameters, so rerunning
  the command continues the study.
- TensorBoard: a trial's stages log under ``runs/STUDY/trial_N/STAGE/``; the trial's
  parameters against its final metrics go to ``runs/STUDY/trial_N`` as hparams.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from aqaa.config import ConfigError, ExperimentConfig, load_config

from .studies import Study, get_study, grid_space, seed_overrides

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_S, GRACE_S = 60, 180


def default_storage(cfg: ExperimentConfig) -> str:
    return str(Path(cfg.paths.checkpoints) / "sweeps.db")


def open_storage(where: str) -> optuna.storages.BaseStorage:
    """SQLite file, journal file (.log / .journal) or SQLAlchemy URL -> Optuna storage."""
    if "://" not in where and Path(where).suffix in (".log", ".journal"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        Path(where).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(where))
    url = where if "://" in where else f"sqlite:///{Path(where).resolve()}"
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # Heartbeats let a later run (on any machine) find trials whose worker died.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))


def make_sampler(study: Study, seeds: int) -> optuna.samplers.BaseSampler:
    if study.grid:
        return optuna.samplers.GridSampler(grid_space(study, seeds), seed=0)
    return optuna.samplers.TPESampler(seed=0, n_startup_trials=4)


def make_pruner(study: Study, kind: str) -> optuna.pruners.BasePruner:
    if study.multi_objective or kind == "none":  # Optuna prunes single-objective studies only
        return optuna.pruners.NopPruner()
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner()
    raise ConfigError(f"unknown pruner '{kind}'; allowed: median, hyperband, none")


def load_or_create(study: Study, storage, name: str, experiment: str, overrides: list[str], seeds: int,
                   pruner: str) -> optuna.Study:
    s = optuna.create_study(study_name=name, storage=storage, directions=list(study.directions),
                            sampler=make_sampler(study, seeds), pruner=make_pruner(study, pruner),
                            load_if_exists=True)
    setup = {"study": study.name, "experiment": experiment, "overrides": list(overrides), "seeds": seeds,
             "objectives": list(study.objectives)}
    known = s.user_attrs.get("setup")
    if known is None:
        s.set_user_attr("setup", setup)
    elif known != setup:
        raise ConfigError(f"study '{name}' in this storage was started with {json.dumps(known)}; this run asks for "
                          f"{json.dumps(setup)}. Use --study-name for a new study, or the same settings to continue.")
    return s


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed worker nobody has reaped yet is a zombie: dead, though its pid answers
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def recover_killed_trials(s: optuna.Study, log=print) -> int:
    """Mark trials left RUNNING by a dead worker on this host as failed and queue them again.
    (On an RDB storage, Optuna's heartbeat does the same for any host after a grace period.)"""
    host, n = socket.gethostname(), 0
    for t in s.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        h, _, pid = worker.rpartition(":")
        if h == host and pid.isdigit() and not _pid_alive(int(pid)):
            s.tell(t.number, state=TrialState.FAIL)
            RetryHeartbeatStaleTrialCallback(max_retry=1)(s, s.get_trials(deepcopy=False)[t.number])
            log(f"sweep: trial {t.number} was interrupted (worker {worker} is gone): failed, queued again")
            n += 1
    return n


def _artifact_names(cfg: ExperimentConfig) -> set[str]:
    root = Path(cfg.paths.checkpoints)
    return {p.name for p in root.iterdir() if p.is_dir() and (p / "artifact.json").is_file()} if root.is_dir() else set()


def _write_hparams(runs: Path, params: dict, metrics: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter

    hp = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()}
    final = {f"hp/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
    with SummaryWriter(str(runs)) as w:
        w.add_hparams(hp, final, run_name=".")


def trial_config(study: Study, trial: optuna.Trial, experiment: str, overrides: list[str], name: str,
                 seeds: int, runs_root: Path) -> tuple[ExperimentConfig, list[str]]:
    trial_overrides = study.overrides(trial)
    if seeds > 1:
        trial_overrides += seed_overrides(trial.suggest_categorical("seed", list(range(seeds))))
    runs = runs_root / name / f"trial_{trial.number}"
    latest = Path("sweeps") / name / f"trial_{trial.number}.json"
    all_overrides = [*overrides, *trial_overrides, f"paths.runs={runs}", f"paths.latest={latest}"]
    return load_config(experiment, all_overrides), trial_overrides


def make_objective(study: Study, experiment: str, overrides: list[str], name: str, seeds: int, prune: bool,
                   progress: bool, log=print):
    from aqaa.artifacts import release_all
    from aqaa.pipeline import run_pipeline

    from .pruning import PRUNED_STAGES, StagePruning, stage_offsets

    runs_root = Path(load_config(experiment, overrides).paths.runs)

    def objective(trial: optuna.Trial):
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        cfg, trial_overrides = trial_config(study, trial, experiment, overrides, name, seeds, runs_root)
        trial.set_user_attr("overrides", trial_overrides)
        if cfg.train.devices != 1:
            raise ConfigError("sweep trials run in one process: set train.devices=1 (run multi-device trials "
                              "as their own distributed jobs)")
        log(f"\nsweep {name}: trial {trial.number}: {' '.join(trial_overrides)}")
        callbacks = {}
        if prune and not study.multi_objective:
            sign = -1.0 if study.directions[0] == "maximize" else 1.0
            offsets = stage_offsets(cfg)
            callbacks = {s: [StagePruning(trial, study.prune_monitor, offsets[s], sign)] for s in PRUNED_STAGES}
        before = _artifact_names(cfg)
        t0 = time.perf_counter()
        try:
            arts = run_pipeline(cfg, callbacks=callbacks, progress=progress, log=log)
        finally:
            release_all()  # a failed or pruned build must not block other workers
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
        trial.set_user_attr("trained", [s for s, a in arts.items() if a.name not in before])
        trial.set_user_attr("artifacts", {s: str(a.path) for s, a in arts.items()})
        m = json.loads((arts["eval"].path / "metrics.json").read_text())
        metrics = {**m["overall"], **m["ppl"]}
        metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("per_category", m["per_category"])
        params = {**trial.params, **{k: v for k, v in trial.user_attrs.items() if k.startswith("w_")}}
        _write_hparams(Path(cfg.paths.runs), params, metrics)
        values = [metrics.get(o, float("nan")) for o in study.objectives]
        missing = [o for o, v in zip(study.objectives, values) if v != v]
        if missing:
            raise ValueError(f"eval produced no {', '.join(missing)} (see {arts['eval'].path}/metrics.json)")
        return values[0] if len(values) == 1 else values

    return objective


def remaining_trials(s: optuna.Study, target: int) -> int:
    return max(0, target - len(s.get_trials(deepcopy=False, states=FINISHED)))


def run_sweep(study_name: str, experiment: str = "quickstart", overrides: list[str] | None = None,
              trials: int | None = None, storage: str | None = None, workers: int = 1, seeds: int = 1,
              pruner: str = "median", name: str | None = None, progress: bool = True, worker: bool = False,
              log=print) -> optuna.Study:
    """Run (or continue) a study until it has ``trials`` finished trials (default: the whole
    grid of a grid study, 8 for the others). Returns the study."""
    study = get_study(study_name)
    overrides = list(overrides or [])
    cfg = load_config(experiment, overrides)
    name = name or study.name
    where = storage or default_storage(cfg)
    if trials is None:
        trials = math.prod(len(v) for v in grid_space(study, seeds).values()) if study.grid else 8
    s = load_or_create(study, open_storage(where), name, experiment, overrides, seeds, pruner)
    if not worker:
        recover_killed_trials(s, log=log)
        if remaining_trials(s, trials) and study.shared_until:
            # Build what every trial shares once, so workers do not queue on the same locks.
            from aqaa.pipeline import run_pipeline

            log(f"sweep {name}: building the shared stages (up to {study.shared_until})")
            shared = load_config(experiment, [*overrides, f"paths.latest=sweeps/{name}/shared.json"])
            run_pipeline(shared, until=study.shared_until, progress=progress, log=log)
    if workers > 1 and not worker:
        return _run_workers(study_name, experiment, overrides, trials, where, workers, seeds, pruner, name, s, log)
    objective = make_objective(study, experiment, overrides, name, seeds, prune=pruner != "none",
                               progress=progress, log=log)
    todo = remaining_trials(s, trials)
    if todo:
        # Trials other workers are running count too, so K workers do not overshoot by K - 1.
        stop_at = optuna.study.MaxTrialsCallback(trials, states=(*FINISHED, TrialState.RUNNING))
        # catch=Exception: a crashed trial is recorded as failed and the study goes on, for at
        # most as many failed trials as finished ones are wanted (a broken setup must stop).
        s.optimize(objective, n_trials=2 * todo, catch=(Exception,), callbacks=[stop_at], gc_after_trial=True)
    return s


def _run_workers(study_name, experiment, overrides, trials, where, workers, seeds, pruner, name, s, log):
    """K processes of ``aqaa sweep --worker`` on one study; torch threads split between them."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    cmd = [sys.executable, "-m", "aqaa.cli", "sweep", study_name, "-e", experiment, "--worker",
           "--trials", str(trials), "--storage", where, "--seeds", str(seeds), "--pruner", pruner,
           "--study-name", name, "--quiet", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torch's default thread count follows it
    log(f"sweep {name}: {workers} workers x {threads} threads on {where}")
    procs = [subprocess.Popen(cmd, env=env) for _ in range(workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
        log(f"sweep {name}: worker exit codes {codes}")
    return optuna.load_study(study_name=name, storage=open_storage(where))
