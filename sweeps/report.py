"""``aqaa report STUDY``: paper-shaped Markdown tables and plots from a study's trials.

Every number comes from the trials' stored eval metrics (``trial.user_attrs["metrics"]``,
copied from the eval artifact's metrics.json); the notebook uses the same functions.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .studies import LAYOUT_CHOICES, PAPER_TABLES, SPLICE_CHOICES, STREAM_CHOICES, Study, get_study

# Columns of the tables, per study: ours first, then what the paper judged (where it did).
COLUMNS = {
    "ratio": ("chat_proxy", "relevance", "factuality", "text_audio_wer", "ppl_text", "ppl_audio"),
    "splice": ("chat_proxy", "relevance", "factuality", "control_accuracy", "text_audio_wer", "ppl_audio"),
    "codebook": ("ppl_audio", "ppl_text", "ppl_linguistic", "ppl_semantic"),
    "dpo": ("text_audio_wer", "chat_proxy", "factuality", "relevance", "ppl_text"),
    "merge": ("chat_proxy", "text_audio_wer", "factuality", "relevance", "ppl_text", "ppl_audio"),
}
ORDER = {"layout": LAYOUT_CHOICES, "splice": SPLICE_CHOICES, "streams": STREAM_CHOICES}


def trials_frame(s: optuna.Study):
    """One row per trial: number, state, parameters, merge weights, metrics, seconds, stages trained."""
    import pandas as pd

    rows = []
    for t in s.get_trials(deepcopy=False):
        row = {"trial": t.number, "state": t.state.name, **t.params}
        row.update({k: v for k, v in t.user_attrs.items() if k.startswith("w_")})
        row.update(t.user_attrs.get("metrics", {}))
        row["seconds"] = t.user_attrs.get("seconds")
        row["trained"] = ",".join(t.user_attrs.get("trained", []))
        rows.append(row)
    return pd.DataFrame(rows)


def axes_of(study: Study) -> list[str]:
    return list(study.grid)


def summary(study: Study, df):
    """Grid studies: mean and standard deviation of each column per point of the study's axes
    (over seeds), completed trials only. Others: the completed trials, best first."""
    import pandas as pd

    done = df[df["state"] == "COMPLETE"] if len(df) else df
    cols = [c for c in COLUMNS[study.name] if c in done.columns]
    if not len(done):
        return pd.DataFrame()
    if not study.grid:
        keep = ["trial", *[c for c in ("w_sft1", "w_sft2", "w_dpo") if c in done.columns], *cols]
        asc = study.directions[0] == "minimize"
        return done[keep].sort_values(study.objectives[0], ascending=asc).reset_index(drop=True)
    axes = axes_of(study)
    g = done.groupby(axes, sort=False)[cols]
    out = g.mean().join(g.std().add_suffix("_sd")).join(g.size().rename("n"))
    out = out.reset_index()
    for a in axes:
        if a in ORDER:
            out = out.sort_values(a, key=lambda c, a=a: c.map({v: i for i, v in enumerate(ORDER[a])}))
    return out.reset_index(drop=True)


def _fmt(mean, sd=None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    digits = 0 if abs(mean) >= 100 else 1 if abs(mean) >= 10 else 2  # perplexities run to thousands
    s = f"{mean:.{digits}f}"
    if sd is not None and isinstance(sd, float) and not math.isnan(sd):
        s += f" ± {sd:.{digits}f}"
    return s


def markdown_table(study: Study, table) -> str:
    """The summary as Markdown; for ratio and splice, the paper's judged scores alongside."""
    if not len(table):
        return "_no completed trials yet_"
    cols = [c for c in COLUMNS[study.name] if c in table.columns]
    paper = PAPER_TABLES.get(study.name)
    if not study.grid:
        head = [c for c in table.columns if c == "trial" or c.startswith("w_")] + cols
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, r in table.iterrows():
            lines.append("| " + " | ".join(str(int(r[c])) if c == "trial" else _fmt(r[c]) for c in head) + " |")
        return "\n".join(lines)
    axes = axes_of(study)
    head = axes + cols + ["n"] + (["paper Chat", "paper Relevance", "paper Factuality"] if paper else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(axes) + "---:|" * (len(head) - len(axes))]
    for _, r in table.iterrows():
        cells = [str(r[a]) for a in axes]
        cells += [_fmt(r[c], r.get(f"{c}_sd")) for c in cols]
        cells.append(str(int(r["n"])))
        if paper:
            p = paper.get(str(r[axes[0]]))
            cells += [f"{p[k]:.2f}" if p else "-" for k in ("chat", "relevance", "factuality")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pareto_rows(s: optuna.Study) -> list[int]:
    return sorted(t.number for t in s.best_trials) if len(s.directions) > 1 and _n_complete(s) else []


def _n_complete(s: optuna.Study) -> int:
    return len(s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def plot_axis(study: Study, table, path: Path) -> Path:
    """Each of the study's columns against its axis (error bars: sd over seeds)."""
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    cols = [c for c in COLUMNS[study.name] if c in table.columns][:4]
    axis = axes_of(study)[0]
    labels = [" ".join(str(r[a]) for a in axes_of(study)) for _, r in table.iterrows()]
    fig, axs = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.2), squeeze=False)
    for ax, c in zip(axs[0], cols):
        sd = table.get(f"{c}_sd")
        ax.bar(range(len(table)), table[c], yerr=None if sd is None else sd.fillna(0), capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(table)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(c, fontsize=10)
    fig.suptitle(f"{study.name}: metrics against {axis}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_simplex(df, metric: str, path: Path) -> Path:
    """Merge trials on the weight simplex (corners: sft1, sft2, dpo), coloured by ``metric``;
    the paper's 5:5:1 marked."""
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    weights = ["w_sft1", "w_sft2", "w_dpo"]
    done = df[df["state"] == "COMPLETE"].dropna(subset=weights) if set(weights) <= set(df.columns) else df[:0]
    corners = {"sft1": (0.0, 0.0), "sft2": (1.0, 0.0), "dpo": (0.5, math.sqrt(3) / 2)}

    def xy(w1, w2, w3):
        return (w1 * corners["sft1"][0] + w2 * corners["sft2"][0] + w3 * corners["dpo"][0],
                w1 * corners["sft1"][1] + w2 * corners["sft2"][1] + w3 * corners["dpo"][1])

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    tri = [corners["sft1"], corners["sft2"], corners["dpo"], corners["sft1"]]
    ax.plot(*zip(*tri), color="0.5", lw=1)
    for name, (x, y) in corners.items():
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(0, 6 if name == "dpo" else -14), ha="center")
    if len(done) and metric in done.columns:
        pts = [xy(r.w_sft1, r.w_sft2, r.w_dpo) for r in done.itertuples()]
        sc = ax.scatter(*zip(*pts), c=done[metric], cmap="viridis", s=40, edgecolor="k")
        fig.colorbar(sc, ax=ax, label=metric)
    ax.scatter(*xy(5 / 11, 5 / 11, 1 / 11), marker="*", s=160, color="red", label="paper 5:5:1")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_axis_off()
    ax.set_title(f"merge weights and {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pareto(s: optuna.Study, study: Study, path: Path) -> Path:
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    from optuna.visualization.matplotlib import plot_pareto_front

    ax = plot_pareto_front(s, target_names=list(study.objectives))
    ax.figure.set_size_inches(5, 4)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=110)
    plt.close(ax.figure)
    return path


def write_report(s: optuna.Study, study: Study, out_dir: Path) -> tuple[str, list[Path]]:
    """Markdown (also written to ``out_dir/report.md``) and plot files for one study."""
    import warnings

    out_dir.mkdir(parents=True, exist_ok=True)
    df = trials_frame(s)
    table = summary(study, df)
    counts = df["state"].value_counts().to_dict() if len(df) else {}
    lines = [f"## Study `{s.study_name}`: {study.description}", "",
             "trials: " + (", ".join(f"{n} {k.lower()}" for k, n in counts.items()) or "none"), ""]
    if "seconds" in df and df["seconds"].notna().any():
        lines += [f"wall time of completed trials: {df['seconds'].dropna().sum() / 60:.1f} min "
                  f"(median {df['seconds'].dropna().median():.0f} s per trial)", ""]
    lines.append(markdown_table(study, table))
    plots: list[Path] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's "experimental" notices on the plotting API
        if study.grid and len(table):
            plots.append(plot_axis(study, table, out_dir / f"{study.name}_axis.png"))
        if study.name == "merge" and len(df):
            plots.append(plot_simplex(df, study.objectives[0], out_dir / "merge_simplex.png"))
        if study.multi_objective and _n_complete(s):
            plots.append(plot_pareto(s, study, out_dir / f"{study.name}_pareto.png"))
            lines += ["", f"Pareto front ({' vs '.join(study.objectives)}): trials "
                      + ", ".join(str(n) for n in pareto_rows(s))]
    if plots:  # relative links: report.md sits beside its plots
        lines += ["", *(f"![{p.stem}]({p.name})" for p in plots)]
    text = "\n".join(lines) + "\n"
    tmp = out_dir / ".report.md.tmp"
    tmp.write_text(text)
    tmp.replace(out_dir / "report.md")
    return text, plots


def report(study_name: str, storage, name: str | None = None, out_dir: Path | None = None) -> tuple[str, list[Path]]:
    study = get_study(study_name)
    s = optuna.load_study(study_name=name or study.name, storage=storage)
    return write_report(s, study, out_dir or Path("checkpoints") / "sweeps" / (name or study.name))
