"""Reproduce the paper's ablations at small scale: output layout (ratio), multi-state splicing,
masked vs unmasked DPO, dual vs single codebook.

Runs each study with ``aqaa sweep``'s code on the ``paper_ablation`` experiment (seeds as
below, no pruning: every grid point is finished so the tables are complete), then writes
each study's report (Markdown tables beside the paper's, plots) to
``benchmarks/results/ablations/STUDY/``. A study is one part: run them one at a time
(``--study ratio``) to fit a session; a killed run continues where it stopped, and
finished trials are never re-run.

    .venv/bin/python benchmarks/reproduce_ablations.py --study ratio     # ~1 h on 2 cores
    .venv/bin/python benchmarks/reproduce_ablations.py --study splice    # ~35 min
    .venv/bin/python benchmarks/reproduce_ablations.py --study dpo       # ~35 min
    .venv/bin/python benchmarks/reproduce_ablations.py --study codebook  # ~45 min
    .venv/bin/python benchmarks/reproduce_ablations.py --report-only     # tables from what has run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aqaa.config import load_config  # noqa: E402
from sweeps.report import write_report  # noqa: E402
from sweeps.runner import open_storage, run_sweep  # noqa: E402
from sweeps.studies import get_study  # noqa: E402

EXPERIMENT = "paper_ablation"
SEEDS = {"ratio": 2, "splice": 3, "dpo": 2, "codebook": 2}  # several where differences are small
OUT = Path(__file__).resolve().parent / "results" / "ablations"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", action="append", choices=list(SEEDS), help="studies to run (default: all, in order)")
    ap.add_argument("--report-only", action="store_true", help="only write the reports of what has run")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args(argv)
    cfg = load_config(EXPERIMENT, args.overrides)
    storage = str(Path(cfg.paths.checkpoints) / f"{EXPERIMENT}.db")
    for name in args.study or list(SEEDS):
        study = get_study(name)
        t0 = time.perf_counter()
        if args.report_only:
            import optuna

            try:
                s = optuna.load_study(study_name=name, storage=open_storage(storage))
            except KeyError:
                print(f"{name}: not run yet")
                continue
        else:
            s = run_sweep(name, EXPERIMENT, args.overrides, storage=storage, seeds=SEEDS[name], pruner="none",
                          workers=args.workers)
            print(f"{name}: sweep finished in {(time.perf_counter() - t0) / 60:.1f} min")
        text, _ = write_report(s, study, OUT / name)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
