"""`aqaa sweep`, `aqaa report` and the ablation-review notebook on the tiny config, built on
the session's tiny pipeline so that trials only add what their parameters touch."""

import json
import os
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.trial import TrialState

from aqaa.cli import main
from sweeps.pruning import StagePruning, stage_offsets
from sweeps.runner import open_storage, run_sweep
from sweeps.studies import STUDIES, merge_weights

REPO = Path(__file__).resolve().parents[1]


def _base(root: Path) -> list[str]:
    return ["-e", "tiny", f"paths.checkpoints={root / 'ck'}", f"paths.runs={root / 'runs'}"]


def _artifacts(root: Path) -> set[str]:
    return {p.name for p in (root / "ck").iterdir() if (p / "artifact.json").exists()}


def _study(root: Path, name: str, storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage or str(root / "ck" / "sweeps.db")))


@pytest.fixture(scope="module")
def merge_sweep(tiny_pipeline):
    root, _ = tiny_pipeline
    before = _artifacts(root)
    assert main(["sweep", "merge", *_base(root), "--trials", "2", "--quiet"]) == 0
    return root, before


def test_merge_trials_train_nothing(merge_sweep):
    root, before = merge_sweep
    s = _study(root, "merge")
    done = s.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2
    for t in done:
        assert t.user_attrs["trained"] == ["merge", "eval"], t.user_attrs["trained"]
        w = [t.user_attrs[f"w_{k}"] for k in ("sft1", "sft2", "dpo")]
        assert abs(sum(w) - 1) < 1e-9 and min(w) > 0
        merged = json.loads((Path(t.user_attrs["artifacts"]["merge"]) / "metrics.json").read_text())
        assert merged["weights"] == pytest.approx(w)
        assert t.values[0] == t.user_attrs["metrics"]["chat_proxy"]
    new = _artifacts(root) - before
    assert new and {n.split("-")[0] for n in new} == {"merge", "eval"}
    # trials never move what `aqaa chat` picks by default
    assert (root / "ck" / "sweeps" / "merge" / "trial_0.json").is_file()


def test_hparams_in_trial_event_files(merge_sweep):
    from tbparse import SummaryReader

    root, _ = merge_sweep
    reader = SummaryReader(str(root / "runs" / "merge" / "trial_0"))
    assert {"u_sft1", "u_sft2", "u_dpo", "w_sft1"} <= set(reader.hparams["tag"])
    assert "hp/chat_proxy" in set(reader.scalars["tag"])


def test_report_tables_and_plots(merge_sweep, capsys):
    root, _ = merge_sweep
    assert main(["report", "merge", *_base(root)]) == 0
    out = capsys.readouterr().out
    assert "| trial | w_sft1 | w_sft2 | w_dpo | chat_proxy" in out
    assert "Pareto front" in out
    d = root / "ck" / "sweeps" / "merge"
    assert (d / "report.md").read_text() == out
    assert (d / "merge_simplex.png").stat().st_size > 1000 and (d / "merge_pareto.png").is_file()


def test_splice_trials_end_to_end_report_to_the_pruner(tiny_pipeline):
    root, _ = tiny_pipeline
    s = run_sweep("splice", "tiny", _base(root)[2:], progress=False)  # the whole grid: 3 trials
    done = s.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["splice"] for t in done) == ["marker_preserving", "marker_removal", "pre_interleaved"]
    offsets = stage_offsets(SimpleNamespace(train=SimpleNamespace(**{
        k: SimpleNamespace(max_steps=n) for k, n in (("pretrain", 4), ("sft1", 4), ("sft2", 3), ("dpo", 3))})))
    for t in done:
        if t.params["splice"] == "marker_preserving":  # the tiny pipeline's own setting: all reused
            assert t.user_attrs["trained"] == [] and not t.intermediate_values
            continue
        assert t.user_attrs["trained"] == ["sft1", "sft2", "dpo", "merge", "eval"]  # pretrain and before: reused
        steps = sorted(t.intermediate_values)
        assert steps[0] >= offsets["sft1"] and steps[-1] > offsets["dpo"]  # sft1 .. dpo all reported
        assert all(v < 0 for v in t.intermediate_values.values())  # maximising study: -perplexity
        assert list((root / "runs" / "splice" / f"trial_{t.number}" / "sft1").rglob("events.out.tfevents.*"))


def test_stage_pruning_reports_at_offset_and_prunes():
    s = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=-10.0))
    trial = s.ask()
    cb = StagePruning(trial, "val/ppl_text", offset=100, sign=-1.0)
    trainer = SimpleNamespace(sanity_checking=False, global_step=7, callback_metrics={"val/ppl_text": torch.tensor(5.0)})
    cb.on_validation_end(trainer, None)  # -5 is above the threshold: goes on
    trainer.global_step, trainer.callback_metrics = 9, {"val/ppl_text": torch.tensor(50.0)}
    with pytest.raises(optuna.TrialPruned):
        cb.on_validation_end(trainer, None)
    assert s._storage.get_trial(trial._trial_id).intermediate_values == {107: -5.0, 109: -50.0}


def test_failed_trial_is_recorded_and_the_study_goes_on(tiny_pipeline, monkeypatch):
    import aqaa.pipeline

    root, _ = tiny_pipeline
    real = aqaa.pipeline.run_pipeline

    def crash_first_trial(cfg, **kw):
        if cfg.paths.latest.endswith("trial_0.json"):
            raise RuntimeError("simulated crash")
        return real(cfg, **kw)

    monkeypatch.setattr(aqaa.pipeline, "run_pipeline", crash_first_trial)
    s = run_sweep("merge", "tiny", _base(root)[2:], trials=1, name="merge_crash", progress=False,
                  storage=str(root / "crash.journal"))
    assert [t.state for t in s.trials] == [TrialState.FAIL, TrialState.COMPLETE]


def test_rerun_after_a_kill_continues_the_study(tiny_pipeline):
    root, _ = tiny_pipeline
    storage = str(root / "kill.db")
    s = optuna.create_study(study_name="merge_kill", storage=open_storage(storage),
                            directions=list(STUDIES["merge"].directions))
    dead = subprocess.Popen(["true"])
    dead.wait()
    trial = s.ask()  # a trial whose worker was killed mid-run: RUNNING forever
    merge_weights(trial)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    s2 = run_sweep("merge", "tiny", _base(root)[2:], trials=1, name="merge_kill", storage=storage, progress=False)
    killed, retried = s2.trials
    assert killed.state == TrialState.FAIL and retried.state == TrialState.COMPLETE
    assert retried.params == killed.params and retried.system_attrs["failed_trial"] == killed.number


def test_two_workers_share_one_study(tiny_pipeline):
    root, _ = tiny_pipeline
    storage = str(root / "workers.journal")
    # eval.limit=2: new eval artifacts, so a trial lasts seconds and the second worker is up before
    # the first is done (the merges themselves are reused from the merge_sweep trials)
    assert main(["sweep", "merge", *_base(root), "eval.limit=2", "--trials", "2", "--workers", "2",
                 "--storage", storage, "--study-name", "merge_workers", "--quiet"]) == 0
    s = _study(root, "merge_workers", storage)
    done = s.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2
    assert len({t.user_attrs["worker"] for t in done}) == 2  # one trial per worker process
    assert os.getpid() not in {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in done}


def test_ablation_review_notebook_executes(merge_sweep, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    root, _ = merge_sweep
    monkeypatch.setenv("AQAA_EXPERIMENT", "tiny")
    monkeypatch.setenv("AQAA_OVERRIDES", " ".join(_base(root)[2:]))
    monkeypatch.setenv("AQAA_STUDIES", "merge,splice")
    nb = nbformat.read(REPO / "notebooks" / "ablation_review.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "merge weights of sft1, sft2 and dpo" in text and "image/png" in text and "<audio" in text
