"""Stage runners: resolve a stage's artifact from the config, reuse it or build it.

Each runner returns the artifact directory. Only the config a stage depends on goes
into its key, so changing e.g. ``corpus.workers`` (how, not what) reuses the corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

from .artifacts import Artifact, ArtifactStore
from .config import ExperimentConfig, decode_guidance, to_dict

# Bump when a stage's code changes what it writes, so old artifacts are not reused.
CORPUS_VERSION = 2
IMPORT_VERSION = 1


def store_for(cfg: ExperimentConfig) -> ArtifactStore:
    return ArtifactStore(cfg.paths.checkpoints, latest=cfg.paths.latest)


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


TOKENIZER_VERSION = 3
TOKENS_VERSION = 1


def tokenizer_spec(cfg: ExperimentConfig) -> dict:
    spec = to_dict(cfg.tokenizer)
    for k in ("streams", "val_every", "ckpt_every", "encode_batch", "threads"):  # how it is used or run, not what
        spec.pop(k)
    return {"version": TOKENIZER_VERSION, **spec,
            "n_linguistic": cfg.audio_tokens.n_linguistic, "n_semantic": cfg.audio_tokens.n_semantic}


def _dir(art: "Artifact | Path | str") -> Path:
    return art.path if isinstance(art, Artifact) else Path(art)


def run_tokenizer(cfg: ExperimentConfig, corpus: "Artifact | Path | None" = None, force: bool = False,
                  progress: bool = True, callbacks=(), log=print) -> Artifact:
    """Train the dual-codebook tokenizer on a corpus (default: this config's corpus stage).

    An interrupted run resumes from the Lightning checkpoint in its partial directory
    (``--force`` starts over). ``callbacks`` are extra Lightning callbacks (tests, sweeps).
    """
    store = store_for(cfg)
    if corpus is None:
        corpus = run_corpus(cfg, progress=progress, log=log)
    spec = tokenizer_spec(cfg)
    art = store.resolve("tokenizer", spec, upstream={"corpus": corpus})
    if art.complete and not force:
        log(f"tokenizer: reusing {art.path}")
    else:
        from lightning_modules.tokenizer import train_tokenizer

        work = store.begin(art, resume=not force)
        log(f"tokenizer: training into {art.path}")
        metrics = train_tokenizer(cfg, _dir(corpus), work, version=art.name, callbacks=list(callbacks),
                                  progress=progress, log=log)
        store.commit(art, work, spec, config=cfg, upstream={"corpus": corpus},
                     extra={"metrics": {k: metrics[k] for k in ("steps", "train_seconds", "kmeans_seconds")}})
    store.update_latest(tokenizer=art)
    return art


def run_tokenize(cfg: ExperimentConfig, corpus: "Artifact | Path | None" = None,
                 tokenizer: "Artifact | Path | None" = None, force: bool = False, progress: bool = True,
                 log=print) -> Artifact:
    """Tokenize every clip of a corpus once ("tokens" artifact, keyed by corpus + tokenizer)."""
    store = store_for(cfg)
    if corpus is None:
        corpus = run_corpus(cfg, progress=progress, log=log)
    if tokenizer is None:
        tokenizer = run_tokenizer(cfg, corpus, progress=progress, log=log)
    spec = {"version": TOKENS_VERSION}
    upstream = {"corpus": corpus, "tokenizer": tokenizer}
    art = store.resolve("tokens", spec, upstream=upstream)
    if art.complete and not force:
        log(f"tokens: reusing {art.path}")
    else:
        from .tokenizer import AudioTokenizer, tokenize_corpus, torch_threads

        work = store.begin(art)
        log(f"tokens: tokenizing {_dir(corpus)} into {art.path}")
        tok = AudioTokenizer.load(_dir(tokenizer))
        with torch_threads(cfg.tokenizer.threads):
            stats = tokenize_corpus(_dir(corpus), tok, work, batch_size=cfg.tokenizer.encode_batch,
                                    progress=progress)
        (work / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        store.commit(art, work, spec, upstream=upstream, extra={"stats": stats})
    store.update_latest(tokens=art)
    return art


VOCODER_VERSION = 1


def vocoder_spec(cfg: ExperimentConfig) -> dict:
    spec = to_dict(cfg.vocoder)
    for k in ("steps", "guidance", "griffin_lim_iters", "val_every", "ckpt_every", "log_audio"):  # use, not what
        spec.pop(k)
    if spec["generator"] == "griffinlim":  # nothing of the generator is trained: its settings do not matter
        for k in ("gen_dim", "gen_layers", "gen_max_steps", "gen_batch", "gen_segment_s", "gen_lr"):
            spec.pop(k)
    return {"version": VOCODER_VERSION, **spec,
            "n_linguistic": cfg.audio_tokens.n_linguistic, "n_semantic": cfg.audio_tokens.n_semantic}


def run_vocoder(cfg: ExperimentConfig, corpus: "Artifact | Path | None" = None,
                tokenizer: "Artifact | Path | None" = None, tokens: "Artifact | Path | None" = None,
                force: bool = False, progress: bool = True, callbacks=(), log=print) -> Artifact:
    """Train the vocoder on the corpus' assistant answers and their codes (keyed by corpus + tokenizer).

    Codes come from the tokens artifact (built here if missing). An interrupted run resumes
    from the Lightning checkpoints in its partial directory (``--force`` starts over).
    """
    store = store_for(cfg)
    if corpus is None:
        corpus = run_corpus(cfg, progress=progress, log=log)
    if tokenizer is None:
        tokenizer = run_tokenizer(cfg, corpus, progress=progress, log=log)
    spec = vocoder_spec(cfg)
    upstream = {"corpus": corpus, "tokenizer": tokenizer}
    art = store.resolve("vocoder", spec, upstream=upstream)
    if art.complete and not force:
        log(f"vocoder: reusing {art.path}")
    else:
        from lightning_modules.vocoder import train_vocoder

        if tokens is None:
            tokens = run_tokenize(cfg, corpus, tokenizer, progress=progress, log=log)
        work = store.begin(art, resume=not force)
        log(f"vocoder: training into {art.path}")
        metrics = train_vocoder(cfg, _dir(corpus), _dir(tokens), work, version=art.name, tokenizer_dir=_dir(tokenizer),
                                callbacks=list(callbacks), progress=progress, log=log)
        store.commit(art, work, spec, config=cfg, upstream={**upstream, "tokens": tokens},
                     extra={"metrics": {"total_seconds": metrics["total_seconds"],
                                        "flow_steps": metrics["flow"]["steps"],
                                        "generator_steps": metrics.get("generator", {}).get("steps", 0)}})
    store.update_latest(vocoder=art)
    return art


# ----- backbone stages: pretrain -> sft1 -> sft2 (lightning_modules/lm.py) -----------------
LM_VERSION = 1
LM_STAGES = ("pretrain", "sft1", "sft2")


def backbone_config(cfg: ExperimentConfig, vocab=None):
    """The backbone shape of ``cfg`` (model.preset and its overrides) over ``vocab``
    (default: the vocabulary of cfg.text and cfg.audio_tokens)."""
    from .model import preset
    from .tokens import Vocab

    mc = cfg.model
    vocab = vocab or Vocab(cfg.text.size, cfg.audio_tokens.n_linguistic, cfg.audio_tokens.n_semantic)
    return preset(mc.preset, vocab_size=vocab.size, n_layer=mc.n_layer, n_head=mc.n_head, n_kv_head=mc.n_kv_head,
                  d_model=mc.d_model, d_ff=mc.d_ff, max_seq_len=mc.max_seq_len, rope_theta=mc.rope_theta,
                  tie_embeddings=mc.tie_embeddings, dropout=mc.dropout)


def lm_stage_spec(cfg: ExperimentConfig, stage: str, vocab=None) -> dict:
    """What a backbone stage's result depends on (how it runs, e.g. strategy or devices, is left out:
    the loss is normalised so any world size trains the same model)."""
    from .distributed import resolve_accelerator, resolve_precision

    st = to_dict(getattr(cfg.train, stage))
    st.pop("val_every")
    spec = {"version": LM_VERSION, "train": st, "grad_clip": cfg.train.grad_clip, "streams": cfg.tokenizer.streams,
            "precision": resolve_precision(cfg.train, resolve_accelerator(cfg.train))}
    if stage == "pretrain":
        spec["model"] = backbone_config(cfg, vocab).to_dict()
    else:
        lay = to_dict(cfg.layout)
        if lay["layout"] != "interleaved":
            lay.pop("ratio")
        spec["layout"] = lay
    return spec


def _run_lm_stage(cfg: ExperimentConfig, stage: str, tokens, init, force: bool, progress: bool, callbacks,
                  log) -> Artifact:
    from .distributed import world_info
    from .lm_data import stage_examples, tokens_vocab
    from .model import ModelConfig

    store = store_for(cfg)
    rank = world_info()[0]
    vocab = tokens_vocab(_dir(tokens), cfg.text.size)
    spec = lm_stage_spec(cfg, stage, vocab)
    upstream = {"tokens": tokens} if init is None else {"tokens": tokens, "init": init}
    art = store.resolve(stage, spec, upstream=upstream)
    if art.complete and not force:
        log(f"{stage}: reusing {art.path}")
    else:
        from lightning_modules.lm import train_lm

        if init is None:
            model_cfg, init_path = backbone_config(cfg, vocab), None
        else:
            init_path = _dir(init) / "model.pt"
            if not init_path.is_file():
                raise FileNotFoundError(f"{stage}: no model.pt in {_dir(init)} (a pretrain or sft artifact?)")
            model_cfg = ModelConfig.from_dict(json.loads((_dir(init) / "model_config.json").read_text()))
            if model_cfg.vocab_size != vocab.size:
                raise ValueError(f"{stage}: the model in {_dir(init)} has {model_cfg.vocab_size} ids, the tokens in "
                                 f"{_dir(tokens)} need {vocab.size} ({vocab})")
        train, val, info = stage_examples(cfg, stage, _dir(tokens), vocab, model_cfg.max_seq_len, log=log)
        # Other ranks re-run this command (Lightning's launcher): only rank 0 may clear the work dir.
        work = store.begin(art, resume=not force or rank != 0)
        log(f"{stage}: training into {art.path} ({info['train']['sequences']} sequences, "
            f"{info['train']['ids']} ids per epoch)")
        stage_cfg = getattr(cfg.train, stage)

        def commit(metrics: dict) -> None:
            store.commit(art, work, spec, config=cfg, upstream=upstream,
                         extra={"metrics": {k: metrics[k] for k in ("steps", "train_seconds", "tokens_per_s", "val")}})

        train_lm(cfg, stage, stage_cfg, model_cfg, vocab, train, val, work, version=art.name, init_path=init_path,
                 callbacks=list(callbacks), progress=progress, extra_metrics={"data": info}, commit=commit, log=log)
    if rank == 0:
        store.update_latest(**{stage: art})
    return art


def run_pretrain(cfg: ExperimentConfig, tokens: "Artifact | Path | None" = None, force: bool = False,
                 progress: bool = True, callbacks=(), log=print) -> Artifact:
    """Pretrain the backbone (ASR, TTS and interleaved tasks) on a tokens artifact (default:
    this config's, built if missing). Rerunning an interrupted run resumes it."""
    from .distributed import check_strategy

    check_strategy(cfg.train)  # before any work
    if tokens is None:
        tokens = run_tokenize(cfg, progress=progress, log=log)
    return _run_lm_stage(cfg, "pretrain", tokens, None, force, progress, callbacks, log)


def run_sft(cfg: ExperimentConfig, phase: str = "sft1", tokens: "Artifact | Path | None" = None,
            init: "Artifact | Path | None" = None, force: bool = False, progress: bool = True, callbacks=(),
            log=print) -> Artifact:
    """SFT phase 1 (from pretrain; AQTA + AQTAA) or phase 2 (from sft1; the high-quality
    AQTAA subset). ``init``: any backbone artifact to start from instead."""
    from .distributed import check_strategy

    if phase not in ("sft1", "sft2"):
        raise ValueError(f"unknown SFT phase '{phase}'; allowed: sft1, sft2")
    check_strategy(cfg.train)  # before any work
    if tokens is None:
        tokens = run_tokenize(cfg, progress=progress, log=log)
    if init is None:
        init = (run_pretrain(cfg, tokens, progress=progress, log=log) if phase == "sft1"
                else run_sft(cfg, "sft1", tokens, progress=progress, log=log))
    return _run_lm_stage(cfg, phase, tokens, init, force, progress, callbacks, log)



DPO_VERSION = 1
MERGE_VERSION = 1


def run_dpo(cfg: ExperimentConfig, tokens: "Artifact | Path | None" = None, init: "Artifact | Path | None" = None,
            force: bool = False, progress: bool = True, callbacks=(), log=print) -> Artifact:
    """DPO from SFT phase 1 (``init``: any backbone artifact instead) on the corpus' preference
    pairs, masked (audio ids out of the log-ratios) or not per ``train.dpo.masked``."""
    from .distributed import world_info
    from .lm_data import tokens_vocab
    from .model import ModelConfig
    from .preference import load_preference_examples

    if tokens is None:
        tokens = run_tokenize(cfg, progress=progress, log=log)
    if init is None:
        init = run_sft(cfg, "sft1", tokens, progress=progress, log=log)
    store = store_for(cfg)
    rank = world_info()[0]
    vocab = tokens_vocab(_dir(tokens), cfg.text.size)
    spec = lm_stage_spec(cfg, "sft1", vocab)  # layout, streams, precision, ...
    dpo = to_dict(cfg.train.dpo)
    dpo.pop("val_every")
    spec = {**spec, "version": DPO_VERSION, "train": dpo}
    upstream = {"tokens": tokens, "init": init}
    art = store.resolve("dpo", spec, upstream=upstream)
    if art.complete and not force:
        log(f"dpo: reusing {art.path}")
    else:
        from lightning_modules.dpo import train_dpo

        model_cfg = ModelConfig.from_dict(json.loads((_dir(init) / "model_config.json").read_text()))
        train, dropped_t = load_preference_examples(cfg, _dir(tokens), "train", vocab, model_cfg.max_seq_len)
        val, dropped_v = load_preference_examples(cfg, _dir(tokens), "val", vocab, model_cfg.max_seq_len)
        if not train:
            raise ValueError(f"dpo: no preference pairs in {_dir(tokens)} (was the corpus built with "
                             "corpus.preference_pairs=true?)")
        work = store.begin(art, resume=not force or rank != 0)
        kinds: dict[str, int] = {}
        for e in train:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        info = {"train_pairs": len(train), "val_pairs": len(val), "kinds": kinds, "dropped": dropped_t + dropped_v}
        log(f"dpo: training into {art.path} ({len(train)} pairs, {'masked' if cfg.train.dpo.masked else 'unmasked'}, "
            f"beta={cfg.train.dpo.beta})")

        def commit(metrics: dict) -> None:
            store.commit(art, work, spec, config=cfg, upstream=upstream,
                         extra={"metrics": {k: metrics[k] for k in ("steps", "train_seconds", "val")}})

        train_dpo(cfg, model_cfg, vocab, train, val, _dir(init), work, version=art.name, callbacks=list(callbacks),
                  progress=progress, extra_metrics={"data": info}, commit=commit, log=log)
    if rank == 0:
        store.update_latest(dpo=art)
    return art


def run_merge(cfg: ExperimentConfig, artifacts: "list[Artifact | Path] | None" = None,
              weights: "list[float] | None" = None, force: bool = False, progress: bool = True,
              log=print) -> Artifact:
    """Merge backbone artifacts: by default those of ``merge.stages`` (sft1, sft2, dpo of this
    config, built if missing) with ``merge.weights`` (5, 5, 1). Writes a backbone artifact
    (model.pt, model_config.json) that every later stage loads like any other."""
    from .merge import merge_state_dicts
    from .model import load_model

    if artifacts is None:
        tokens = run_tokenize(cfg, progress=progress, log=log)
        sft1 = run_sft(cfg, "sft1", tokens, progress=progress, log=log)
        built = {"sft1": sft1}
        for st in cfg.merge.stages:
            if st not in built:
                built[st] = (run_pretrain(cfg, tokens, progress=progress, log=log) if st == "pretrain"
                             else run_sft(cfg, "sft2", tokens, init=sft1, progress=progress, log=log) if st == "sft2"
                             else run_dpo(cfg, tokens, init=sft1, progress=progress, log=log))
        artifacts = [built[st] for st in cfg.merge.stages]
    weights = list(cfg.merge.weights if weights is None else weights)
    dirs = [_dir(a) for a in artifacts]
    if len(weights) != len(dirs):
        raise ValueError(f"merge: {len(weights)} weights for {len(dirs)} artifacts")
    configs = []
    for d in dirs:
        if not (d / "model.pt").is_file():
            raise FileNotFoundError(f"merge: {d} holds no model.pt (merge takes pretrain, sft, dpo or merge artifacts)")
        configs.append(json.loads((d / "model_config.json").read_text()))
    from .model import ModelConfig

    shape = ModelConfig.from_dict(configs[0]).to_dict()
    for d, c in zip(dirs[1:], configs[1:]):
        if ModelConfig.from_dict(c).to_dict() != shape:
            raise ValueError(f"merge: {d} has another model shape than {dirs[0]}")
        for key in ("vocab", "streams", "layout"):
            if key in c and key in configs[0] and c[key] != configs[0][key]:
                raise ValueError(f"merge: {d} was trained with another {key} ({c[key]}) than {dirs[0]} "
                                 f"({configs[0][key]})")
    store = store_for(cfg)
    spec = {"version": MERGE_VERSION, "weights": weights}
    upstream = {f"in{k}": d for k, d in enumerate(dirs)}
    art = store.resolve("merge", spec, upstream=upstream)
    if art.complete and not force:
        log(f"merge: reusing {art.path}")
    else:
        work = store.begin(art)
        log(f"merge: {' + '.join(f'{w:g} x {d.name}' for w, d in zip(weights, dirs))} -> {art.path}")
        models = [load_model(d) for d in dirs]
        # Tied embeddings are one tensor under two names: merging the state dicts merges it
        # once per name, identically, and load_model re-ties them.
        merged = merge_state_dicts([m.state_dict() for m in models], weights)
        import torch

        torch.save(merged, work / "model.pt")
        (work / "model_config.json").write_text(json.dumps({**configs[0], "stage": "merge"}, indent=2) + "\n")
        (work / "metrics.json").write_text(json.dumps(
            {"stage": "merge", "inputs": [str(d) for d in dirs], "weights": weights}, indent=2) + "\n")
        store.commit(art, work, spec, config=cfg, upstream=upstream)
    store.update_latest(merge=art)
    return art


EVAL_VERSION = 2  # 2: the key holds the vocoder guidance used


def _eval_vocoder(cfg: ExperimentConfig, store, tokenizer_dir: Path, corpus_dir: Path) -> Path:
    """The vocoder this config trains, if it is built; else the newest one trained on the
    backbone's tokenizer. Not latest.json first: another experiment's vocoder there would
    silently change what this eval measures (and its key)."""
    from .chat import find_vocoder

    art = store.resolve("vocoder", vocoder_spec(cfg), upstream={"corpus": corpus_dir, "tokenizer": tokenizer_dir})
    if art.complete:
        return art.path
    store.release(art)  # resolve locked it for building; the eval does not build vocoders
    return find_vocoder(tokenizer_dir, Path(cfg.paths.checkpoints))


def run_eval(cfg: ExperimentConfig, backbone: "Artifact | Path | None" = None, force: bool = False,
             progress: bool = True, log=print) -> Artifact:
    """Evaluate a backbone artifact (default: this config's merge) on ``eval.split``:
    metrics.json, and TensorBoard scalars, hparams and question/answer audio."""
    from .chat import Assistant, find_upstream

    if backbone is None:
        backbone = run_merge(cfg, progress=progress, log=log)
    bdir = _dir(backbone)
    tokens_dir = find_upstream(bdir, "tokens")
    corpus_dir = find_upstream(tokens_dir, "corpus")
    ec = to_dict(cfg.eval)
    ec.pop("log_audio")
    ec["vocoder_guidance"] = guidance = decode_guidance(cfg)
    spec = {"version": EVAL_VERSION, **ec}
    store = store_for(cfg)
    voc = _eval_vocoder(cfg, store, find_upstream(bdir, "tokenizer"), corpus_dir)
    upstream = {"backbone": bdir, "vocoder": voc, "tokens": tokens_dir}
    art = store.resolve("eval", spec, upstream=upstream)
    if art.complete and not force:
        log(f"eval: reusing {art.path}")
    else:
        assistant = Assistant.load(bdir, checkpoints_root=Path(cfg.paths.checkpoints), vocoder_dir=voc)
        from torch.utils.tensorboard import SummaryWriter

        from .judges import AsrJudge, DnsMos
        from .tts import Synthesizer

        work = store.begin(art)
        log(f"eval: {bdir.name} on {cfg.eval.split} -> {art.path}")
        writer = SummaryWriter(str(Path(cfg.paths.runs) / "eval" / art.name))
        logged = [0]

        def on_sample(row, question, answer) -> None:
            if logged[0] < cfg.eval.log_audio:
                from .audio import TOKENIZER_SR, VOCODER_SR, save_wav

                # to TensorBoard, and into the artifact for the notebook's audio players
                samples = work / "samples"
                samples.mkdir(exist_ok=True)
                writer.add_audio(f"question/{row['id']}", question[None], sample_rate=TOKENIZER_SR)
                save_wav(samples / f"{row['id']}_question.wav", question, TOKENIZER_SR)
                if len(answer):
                    writer.add_audio(f"answer/{row['id']}", answer.clamp(-1, 1)[None], sample_rate=VOCODER_SR)
                    save_wav(samples / f"{row['id']}_answer.wav", answer.clamp(-1, 1), VOCODER_SR)
                (samples / f"{row['id']}.json").write_text(json.dumps(
                    {k: row[k] for k in ("query_text", "generated_text", "transcript") if k in row}) + "\n")
                writer.add_text(f"answer/{row['id']}", f"Q: {row['query_text']}  \nA (text): "
                                f"{row['generated_text']}  \nA (heard): {row['transcript']}")
                logged[0] += 1

        gen = dict(max_new_tokens=cfg.eval.max_new_tokens, temperature=cfg.eval.temperature,
                   top_p=cfg.eval.top_p, seed=cfg.eval.seed, steps=cfg.eval.vocoder_steps,
                   guidance=guidance)
        answer = assistant.answer
        assistant.answer = lambda wav, sr: answer(wav, sr, **gen)  # the eval's generation settings
        from .evaluate import evaluate

        result = evaluate(assistant, corpus_dir, tokens_dir, AsrJudge(), DnsMos(), synth=Synthesizer(),
                          split=cfg.eval.split, limit=cfg.eval.limit or None, progress=progress,
                          on_sample=on_sample)
        metrics = {"backbone": str(bdir), "layout": assistant.layout, "ratio": assistant.ratio,
                   "splice": assistant.splice, "streams": assistant.streams, **result}
        (work / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
        step = 0
        for k, v in result["overall"].items():
            if isinstance(v, float) and v == v:
                writer.add_scalar(f"eval/{k}", v, step)
        for k, v in result["ppl"].items():
            if v == v:
                writer.add_scalar(f"eval/{k}", v, step)
        for c, ms in result["per_category"].items():
            for k, v in ms.items():
                if v == v:
                    writer.add_scalar(f"eval_{c}/{k}", v, step)
        hp = {"layout": assistant.layout, "ratio": str(assistant.ratio), "splice": assistant.splice,
              "streams": assistant.streams, "backbone": bdir.name}
        final = {f"hp/{k}": v for k, v in {**result["overall"], **result["ppl"]}.items()
                 if isinstance(v, float) and v == v}
        writer.add_hparams(hp, final, run_name=".")
        writer.close()
        store.commit(art, work, spec, config=cfg, upstream=upstream, extra={"metrics": result["overall"]})
    store.update_latest(eval=art)
    return art

def _counts(corpus_dir: Path) -> dict:
    from .corpus.manifest import SPLITS, read_dialogues

    out = {}
    for s in SPLITS:
        c: dict[str, int] = {}
        for d in read_dialogues(corpus_dir, s):
            c[d.category] = c.get(d.category, 0) + 1
        out[s] = c
    return out
