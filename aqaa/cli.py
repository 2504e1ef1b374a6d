"""The ``aqaa`` command line: one subcommand per stage of the recipe.

Every subcommand takes ``-e/--experiment`` (a name under configs/experiments/ or a YAML
path) and trailing ``key=value`` overrides; the config is checked before any work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, decode_guidance, load_config, to_yaml


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--experiment", default="quickstart",
                   help="experiment name under configs/experiments/ or a .yaml path (default: quickstart)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. corpus.seed=3")


def cmd_config_show(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    print(to_yaml(cfg), end="")
    return 0


def cmd_data_build(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    from .corpus.build import format_counts, format_voice_states
    from .stages import run_corpus

    art = run_corpus(cfg, force=args.force, progress=not args.quiet)
    stats = json.loads((art.path / "stats.json").read_text())
    print(f"\ncorpus artifact: {art.path}")
    print(f"{stats['clips']} clips, {stats['audio_seconds']:.0f} s of audio, synthesised in "
          f"{stats['wall_seconds']:.0f} s with {stats['workers']} processes "
          f"({stats['synthesis_speed']:.1f} audio s per wall s)\n")
    print(format_counts(stats))
    print("\nassistant voice states, measured on the synthesised answers; 'vs neutral' is the median change "
          "against the same words in the neutral voice:\n")
    print(format_voice_states(stats["voice_states"]))
    return 0


def cmd_data_import(args) -> int:
    from .stages import run_import

    cfg = load_config(args.experiment, args.overrides)
    art, report = run_import(cfg, Path(args.manifest), skip_bad=args.skip_bad)
    print(f"imported {report['rows']} rows into {art.path}; splits: "
          + ", ".join(f"{k} {v}" for k, v in report["splits"].items()))
    if args.skip_bad:
        print(f"skipped {report['skipped']} bad rows")
        for line in report["bad"]:
            print(f"  {line}")
    return 0


def _tokenizer_summary(art_path: Path) -> str:
    m = json.loads((art_path / "metrics.json").read_text())
    lines = [f"tokenizer artifact: {art_path}",
             f"{m['steps']} steps in {m['train_seconds']:.0f} s (+ k-means {m['kmeans_seconds']:.0f} s)"]
    for split in ("train", "test"):
        s = m.get(split)
        if not s:
            continue
        books = ", ".join(f"{b} {s[b]['used']}/{s[b]['n_codes']} codes used, perplexity {s[b]['perplexity']:.0f}"
                          for b in ("linguistic", "semantic"))
        lines.append(f"{split} ({s['seconds']:.0f} s): CER {s['cer_linguistic']:.3f} (recogniser), "
                     f"{s['cer_semantic']:.3f} (semantic head); {books}")
    return "\n".join(lines)


def cmd_train_tokenizer(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    from lightning_modules.tokenizer import TrainingDiverged

    from .stages import run_tokenizer

    try:
        art = run_tokenizer(cfg, corpus=Path(args.corpus) if args.corpus else None, force=args.force,
                            progress=not args.quiet)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n" + _tokenizer_summary(art.path))
    return 0


def cmd_data_tokenize(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    from .stages import run_tokenize

    art = run_tokenize(cfg, corpus=Path(args.corpus) if args.corpus else None,
                       tokenizer=Path(args.tokenizer) if args.tokenizer else None, force=args.force,
                       progress=not args.quiet)
    st = json.loads((art.path / "stats.json").read_text())
    print(f"\ntokens artifact: {art.path}")
    print(f"{st['clips']} clips, {st['audio_seconds']:.0f} s of audio -> {st['linguistic_codes']} linguistic + "
          f"{st['semantic_codes']} semantic codes in {st['wall_seconds']:.1f} s (encode RTF {st['encode_rtf']:.4f})")
    return 0


def _vocoder_summary(art_path: Path) -> str:
    m = json.loads((art_path / "metrics.json").read_text())
    lines = [f"vocoder artifact: {art_path}",
             f"trained on {m['train_clips']} answers ({m['train_audio_seconds'] / 60:.1f} min of 24 kHz audio) "
             f"in {m['total_seconds']:.0f} s ({m.get('total_cpu_seconds', 0):.0f} s of CPU time)"]
    g = m.get("generator")
    lines.append(f"generator: {g['steps']} steps in {g['train_seconds']:.0f} s, val mel L1 {g['val_mel_l1']}"
                 if g else "generator: none (Griffin-Lim)")
    f = m["flow"]
    lines.append(f"flow: {f['steps']} steps in {f['train_seconds']:.0f} s, val mel L1 {f['val_mel_l1']} "
                 f"(encoder alone {f['val_prior_mel_l1']})")
    return "\n".join(lines)


def cmd_train_vocoder(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    from lightning_modules.vocoder import TrainingDiverged

    from .stages import run_vocoder

    try:
        art = run_vocoder(cfg, corpus=Path(args.corpus) if args.corpus else None,
                          tokenizer=Path(args.tokenizer) if args.tokenizer else None, force=args.force,
                          progress=not args.quiet)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n" + _vocoder_summary(art.path))
    return 0


def _lm_summary(art_path: Path) -> str:
    m = json.loads((art_path / "metrics.json").read_text())
    lines = [f"{m['stage']} artifact: {art_path}",
             f"{m['steps']} steps in {m['train_seconds']:.0f} s of training ({m['tokens_per_s']:.0f} tokens/s, "
             f"{m['precision']}, strategy {m['strategy']} x {m['world_size']}, {m['params'] / 1e6:.1f}M params, "
             f"{100 * m['padding_fraction']:.1f}% padding)"]
    b, a = m.get("val_before"), m.get("val")
    if a:
        def row(k: str) -> str:
            return f"{k} {b[k]:.3g} -> {a[k]:.3g}" if b and k in b else f"{k} {a[k]:.3g}"

        lines.append("val (before -> after): " + ", ".join(
            row(k) for k in ("loss", "ppl_text", "ppl_audio", "ppl_linguistic", "ppl_semantic") if k in a))
    return "\n".join(lines)


def cmd_train_lm(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    from lightning_modules.lm import TrainingDiverged

    from .distributed import world_info
    from .stages import run_pretrain, run_sft

    tokens = Path(args.tokens) if args.tokens else None
    try:
        if args.stage == "pretrain":
            art = run_pretrain(cfg, tokens=tokens, force=args.force, progress=not args.quiet)
        else:
            art = run_sft(cfg, args.stage, tokens=tokens, init=Path(args.init) if args.init else None,
                          force=args.force, progress=not args.quiet)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if world_info()[0] == 0:  # other ranks of a multi-process run stay quiet
        print("\n" + _lm_summary(art.path))
    return 0


def cmd_train_dpo(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    from lightning_modules.lm import TrainingDiverged

    from .distributed import world_info
    from .stages import run_dpo

    try:
        art = run_dpo(cfg, tokens=Path(args.tokens) if args.tokens else None,
                      init=Path(args.init) if args.init else None, force=args.force, progress=not args.quiet)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if world_info()[0] == 0:
        m = json.loads((art.path / "metrics.json").read_text())
        print(f"\ndpo artifact: {art.path}")
        print(f"{m['steps']} steps in {m['train_seconds']:.0f} s, {'masked' if m['masked'] else 'unmasked'}, "
              f"beta={m['beta']}, {m['data']['train_pairs']} train pairs")
        b, a = m.get("val_before"), m.get("val")
        if a and b:
            print("val (before -> after): " + ", ".join(
                f"{k} {b[k]:.3g} -> {a[k]:.3g}" for k in ("reward_accuracy", "ppl_text", "ppl_audio") if k in a))
    return 0


def cmd_merge(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    from .stages import run_merge

    artifacts = [Path(a) for a in args.artifacts] or None
    weights = [float(w) for w in args.weights] if args.weights else None
    if artifacts is not None and weights is None:
        weights = [1.0] * len(artifacts)
    art = run_merge(cfg, artifacts=artifacts, weights=weights, force=args.force, progress=not args.quiet)
    m = json.loads((art.path / "metrics.json").read_text())
    print(f"\nmerge artifact: {art.path}")
    print("W = (" + " + ".join(f"{w:g} x {Path(d).name}" for w, d in zip(m["weights"], m["inputs"]))
          + f") / {sum(m['weights']):g}")
    return 0


def _latest(cfg, stage: str) -> Path:
    from .artifacts import ArtifactStore

    store = ArtifactStore(cfg.paths.checkpoints, latest=cfg.paths.latest)
    where = store.latest(stage)
    if where is None:
        raise ConfigError(f"no {stage} artifact in {store.latest_path}: pass --checkpoint DIR "
                          "or run `aqaa pipeline` first")
    return where


def cmd_chat(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    from .audio import load_wav, save_wav
    from .chat import Assistant

    ckpt = Path(args.checkpoint) if args.checkpoint else _latest(cfg, "merge")
    if not Path(args.input).is_file():
        raise ConfigError(f"--input: no such file: {args.input}")
    assistant = Assistant.load(ckpt, checkpoints_root=Path(cfg.paths.checkpoints))
    wav, sr = load_wav(args.input)
    ec = cfg.eval
    res = assistant.answer(wav, sr, max_new_tokens=ec.max_new_tokens, temperature=ec.temperature, top_p=ec.top_p,
                           seed=ec.seed, steps=ec.vocoder_steps,
                           guidance=decode_guidance(cfg))
    save_wav(args.output, res.audio, res.sample_rate)
    if args.json:
        print(json.dumps({**res.to_json(), "output": str(args.output), "checkpoint": str(ckpt)}))
    else:
        print(res.text)
        ttfa = f"{res.seconds_to_first_audio:.2f} s" if res.seconds_to_first_audio is not None else "no audio"
        print(f"[{len(res.audio) / res.sample_rate:.1f} s of audio -> {args.output}; first audio after {ttfa}, "
              f"real-time factor {res.real_time_factor:.2f}]", file=sys.stderr)
    return 0


def _eval_table(m: dict) -> str:
    keys = ("chat_proxy", "factuality", "relevance", "text_audio_wer", "control_accuracy", "dnsmos_ovrl")
    lines = ["| category | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for cat, ms in list(m["per_category"].items()) + [("**overall**", m["overall"])]:
        lines.append(f"| {cat} | " + " | ".join("-" if ms[k] != ms[k] else f"{ms[k]:.2f}" for k in keys) + " |")
    ppl = m["ppl"]
    lines.append("\nteacher-forced perplexity on the test split: " + ", ".join(
        f"{k} {v:.2f}" for k, v in ppl.items() if k.startswith("ppl") and v == v))
    return "\n".join(lines)


def cmd_eval(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    from .stages import run_eval

    ckpt = Path(args.checkpoint) if args.checkpoint else _latest(cfg, "merge")
    art = run_eval(cfg, ckpt, force=args.force, progress=not args.quiet)
    m = json.loads((art.path / "metrics.json").read_text())
    print(f"\neval artifact: {art.path} (metrics.json)\n")
    print(_eval_table(m))
    return 0


def cmd_pipeline(args) -> int:
    cfg = load_config(args.experiment, args.overrides)
    from .pipeline import run_pipeline

    arts = run_pipeline(cfg, until=args.until, progress=not args.quiet)
    if "eval" in arts:
        print(f"\n{_eval_table(json.loads((arts['eval'].path / 'metrics.json').read_text()))}")
    print(f"\nartifacts: {cfg.paths.checkpoints}/latest.json; TensorBoard: tensorboard --logdir {cfg.paths.runs}")
    return 0


def cmd_sweep(args) -> int:
    from sweeps.report import write_report
    from sweeps.runner import run_sweep
    from sweeps.studies import get_study

    study = get_study(args.study)
    s = run_sweep(args.study, args.experiment, args.overrides, trials=args.trials, storage=args.storage,
                  workers=args.workers, seeds=args.seeds, pruner=args.pruner, name=args.study_name,
                  progress=not args.quiet, worker=args.worker)
    if not args.worker:
        cfg = load_config(args.experiment, args.overrides)
        text, _ = write_report(s, study, Path(cfg.paths.checkpoints) / "sweeps" / s.study_name)
        print("\n" + text)
        print(f"TensorBoard: tensorboard --logdir {Path(cfg.paths.runs) / s.study_name}")
    return 0


def cmd_report(args) -> int:
    from sweeps.report import report
    from sweeps.runner import default_storage, open_storage

    cfg = load_config(args.experiment, args.overrides)
    name = args.study_name or args.study
    out = Path(args.out) if args.out else Path(cfg.paths.checkpoints) / "sweeps" / name
    text, _ = report(args.study, open_storage(args.storage or default_storage(cfg)), name=name, out_dir=out)
    print(text, end="")
    return 0


def cmd_model_info(args) -> int:
    from .model import count_params, flops_per_token, fsdp_memory, preset

    if args.preset:
        mc = preset(args.preset)
        source = f"preset {args.preset}"
    else:
        from .stages import backbone_config

        cfg = load_config(args.experiment, args.overrides)
        mc = backbone_config(cfg)
        source = f"experiment {args.experiment} (model.preset={cfg.model.preset})"
    c = count_params(mc)  # built on the meta device: no memory, any size
    mem = fsdp_memory(c["total"], args.gpus)
    info = {"source": source, "config": mc.to_dict(), "params": c, "gpus": args.gpus, "per_gpu_bytes": mem,
            "train_flops_per_token": flops_per_token(mc, mc.max_seq_len)}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    gib = 2**30
    print(f"backbone: {source}")
    print(f"  {mc.n_layer} layers, d_model {mc.d_model}, {mc.n_head} heads ({mc.n_kv_head} K/V heads, head size "
          f"{mc.head_dim}), SwiGLU {mc.d_ff}, vocab {mc.vocab_size}, context {mc.max_seq_len}, "
          f"{'tied' if mc.tie_embeddings else 'untied'} embeddings")
    print(f"  parameters: {c['total']:,} ({c['total'] / 1e9:.2f}B); embedding {c['embedding']:,}, output head "
          f"{c['lm_head']:,}, {c['per_block']:,} per block")
    print(f"  training FLOPs per token at full context: {info['train_flops_per_token']:.3g}")
    print(f"\nper-GPU memory, fully sharded over {args.gpus} GPUs (FSDP / ZeRO-3; activations extra):")
    rows = [("params (bf16)", "params"), ("grads (bf16)", "grads"), ("AdamW m + v (fp32)", "optimizer"),
            ("master weights (fp32)", "master_weights"), ("total", "total")]
    for label, k in rows:
        print(f"  {label:<24}{mem[k] / gib:>10.2f} GiB")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aqaa", description="AQAA Lab: the Step-Audio-AQAA recipe at small scale.")
    sub = parser.add_subparsers(dest="command", required=True)

    p_cfg = sub.add_parser("config", help="inspect configuration")
    cfg_sub = p_cfg.add_subparsers(dest="action", required=True)
    p = cfg_sub.add_parser("show", help="print the resolved, validated config")
    _add_config_args(p)
    p.set_defaults(func=cmd_config_show)

    p_data = sub.add_parser("data", help="build or import a spoken-QA corpus")
    data_sub = p_data.add_subparsers(dest="action", required=True)
    p = data_sub.add_parser("build", help="synthesise the embedded spoken-QA corpus (Piper + eSpeak NG)")
    _add_config_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even if a complete artifact exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_build)
    p = data_sub.add_parser("import", help="import your own JSONL manifest as a corpus")
    p.add_argument("manifest", help="JSONL manifest (see README: 'Bring your own data')")
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows and report how many, instead of failing")
    _add_config_args(p)
    p.set_defaults(func=cmd_data_import)
    p = data_sub.add_parser("tokenize", help="encode every clip of a corpus with the audio tokenizer (cached)")
    _add_config_args(p)
    p.add_argument("--corpus", help="corpus artifact directory (default: this config's corpus stage)")
    p.add_argument("--tokenizer", help="tokenizer artifact directory (default: this config's tokenizer stage)")
    p.add_argument("--force", action="store_true", help="re-tokenize even if a complete artifact exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_tokenize)

    # `aqaa train STAGE`: one subcommand per trainable stage.
    p_train = sub.add_parser("train", help="train a stage of the recipe")
    train_sub = p_train.add_subparsers(dest="stage", required=True)
    p = train_sub.add_parser("tokenizer", help="train the dual-codebook audio tokenizer (linguistic + semantic)")
    _add_config_args(p)
    p.add_argument("--corpus", help="corpus artifact directory (default: this config's corpus stage)")
    p.add_argument("--force", action="store_true", help="retrain from scratch even if an artifact or a partial run exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train_tokenizer)
    p = train_sub.add_parser("vocoder", help="train the flow-matching vocoder (tokens -> mel -> 24 kHz wave)")
    _add_config_args(p)
    p.add_argument("--corpus", help="corpus artifact directory (default: this config's corpus stage)")
    p.add_argument("--tokenizer", help="tokenizer artifact directory (default: this config's tokenizer stage)")
    p.add_argument("--force", action="store_true", help="retrain from scratch even if an artifact or a partial run exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train_vocoder)
    for stage, help_ in (("pretrain", "pretrain the backbone: ASR, TTS and interleaved text<->audio tasks"),
                         ("sft1", "SFT phase 1 from pretrain: mixed AQTA + AQTAA, loss on the response"),
                         ("sft2", "SFT phase 2 from sft1: the high-quality AQTAA subset")):
        p = train_sub.add_parser(stage, help=help_)
        _add_config_args(p)
        p.add_argument("--tokens", help="tokens artifact directory (default: this config's, built if missing)")
        if stage != "pretrain":
            p.add_argument("--init", help="backbone artifact to start from (default: "
                                          f"{'pretrain' if stage == 'sft1' else 'sft1'} of this config)")
        p.add_argument("--force", action="store_true", help="retrain from scratch even if an artifact or a partial run exists")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.set_defaults(func=cmd_train_lm)

    p = train_sub.add_parser("dpo", help="DPO from sft1 on the preference pairs (masked: audio ids out of the "
                                         "log-ratios; train.dpo.masked=false for plain DPO)")
    _add_config_args(p)
    p.add_argument("--tokens", help="tokens artifact directory (default: this config's, built if missing)")
    p.add_argument("--init", help="backbone artifact to start from (default: sft1 of this config)")
    p.add_argument("--force", action="store_true", help="retrain from scratch even if an artifact or a partial run exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train_dpo)

    p = sub.add_parser("merge", help="weighted merge of backbone artifacts (default: merge.stages with merge.weights, "
                                     "the paper's (5 sft1 + 5 sft2 + 1 dpo) / 11)")
    _add_config_args(p)
    p.add_argument("--artifacts", nargs="+", default=[], metavar="DIR",
                   help="backbone artifact directories to merge instead of this config's merge.stages")
    p.add_argument("--weights", nargs="+", metavar="W", help="one weight per artifact (default: merge.weights, "
                                                             "or equal weights with --artifacts)")
    p.add_argument("--force", action="store_true", help="merge again even if the artifact exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("chat", help="answer a spoken question with speech (and print the answer's text)")
    _add_config_args(p)
    p.add_argument("--checkpoint", help="any backbone artifact (default: the merge in checkpoints/latest.json)")
    p.add_argument("--input", required=True, help="the question: a wav (any rate)")
    p.add_argument("--output", required=True, help="where to write the spoken answer (24 kHz wav)")
    p.add_argument("--json", action="store_true", help="print one JSON object (text, segments, timings)")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("eval", help="perplexities and MOS proxies of a backbone on the test split (metrics.json)")
    _add_config_args(p)
    p.add_argument("--checkpoint", help="any backbone artifact (default: the merge in checkpoints/latest.json)")
    p.add_argument("--force", action="store_true", help="evaluate again even if the artifact exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("pipeline", help="every stage end to end (corpus ... eval), reusing complete artifacts")
    _add_config_args(p)
    p.add_argument("--until", default="eval", help="last stage to run (default: eval)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_pipeline)

    from sweeps.studies import STUDIES

    studies = ", ".join(f"{k} ({v.description})" for k, v in STUDIES.items())
    p = sub.add_parser("sweep", help="run an Optuna ablation study; every trial a pipeline run reusing artifacts",
                       description=f"Studies: {studies}.")
    p.add_argument("study", choices=list(STUDIES), help="which ablation")
    _add_config_args(p)
    p.add_argument("--trials", type=int, help="finished trials to reach (default: the whole grid; merge: 8)")
    p.add_argument("--storage", help="SQLite file (default checkpoints/sweeps.db), journal file (*.log, "
                                     "*.journal) or SQLAlchemy URL (postgresql://...)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per grid point (default 1)")
    p.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"],
                   help="pruner of single-objective studies, on validation perplexity (default median)")
    p.add_argument("--study-name", help="name in the storage (default: the study's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # set by --workers for its children
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="Markdown tables (beside the paper's) and plots of a study")
    p.add_argument("study", choices=list(STUDIES))
    _add_config_args(p)
    p.add_argument("--storage", help="as for `aqaa sweep` (default checkpoints/sweeps.db)")
    p.add_argument("--study-name", help="name in the storage (default: the study's)")
    p.add_argument("--out", help="directory for report.md and plots (default checkpoints/sweeps/STUDY)")
    p.set_defaults(func=cmd_report)

    p_model = sub.add_parser("model", help="inspect the backbone")
    model_sub = p_model.add_subparsers(dest="action", required=True)
    p = model_sub.add_parser("info", help="parameter count and per-GPU memory under FSDP (meta device, any size)")
    _add_config_args(p)
    p.add_argument("--preset", help="a model preset (tiny, small, paper) instead of the experiment's model")
    p.add_argument("--gpus", type=int, default=8, help="GPUs to shard over (default 8)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_model_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come before or after options (argparse alone would stop
    # collecting them at the first option that follows a positional).
    args, extra = parser.parse_known_args(argv)
    unknown = [x for x in extra if x.startswith("-") or "=" not in x]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    from .corpus.manifest import ManifestError

    try:
        return args.func(args)
    except (ConfigError, ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
