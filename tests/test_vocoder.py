"""The flow-matching vocoder through its real entry points, on the tiny corpus.

Output length against the codes' duration, determinism under a seed, the step count and
guidance taking effect, clear errors for bad codes, resuming an interrupted run, a NaN
loss stopping with the last good checkpoint kept, and the Griffin-Lim fallback.
"""

import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from aqaa.artifacts import ArtifactStore
from aqaa.cli import main
from aqaa.config import ConfigError, load_config
from aqaa.stages import run_vocoder
from aqaa.tokenizer import AudioTokenizer, load_tokens
from aqaa.vocoder import FlowConfig, Generator, GeneratorConfig, MelConfig, TokenToMel, Vocoder
from aqaa.vocoder.mel import GriffinLimVocoder, LogMel
from lightning_modules.vocoder import CKPT_DIR, FlowModule, TrainingDiverged

SAMPLES_PER_LING = 1440  # 24 kHz / 16.67 Hz


def _overrides(root):
    return [f"paths.checkpoints={root / 'checkpoints'}", f"paths.runs={root / 'runs'}"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("voc")


@pytest.fixture(scope="module")
def vocoder_dir(root):
    # corpus -> tokenizer -> tokens -> vocoder, all through `aqaa train vocoder`
    assert main(["train", "vocoder", "-e", "tiny", "--quiet", *_overrides(root)]) == 0
    return ArtifactStore(root / "checkpoints").latest("vocoder")


@pytest.fixture(scope="module")
def upstream(root, vocoder_dir):
    store = ArtifactStore(root / "checkpoints")
    return {k: store.latest(k) for k in ("corpus", "tokenizer", "tokens")}


@pytest.fixture(scope="module")
def voc(vocoder_dir):
    return Vocoder.load(vocoder_dir)


def _codes(voc, n_ling, seed=0, sem_extra=0):
    g = torch.Generator().manual_seed(seed)
    n_sem = round(1.5 * n_ling) + sem_extra
    return (torch.randint(0, voc.n_linguistic, (n_ling,), generator=g).tolist(),
            torch.randint(0, voc.n_semantic, (n_sem,), generator=g).tolist())


# ----- the artifact ------------------------------------------------------------------------


def test_artifact_layout_and_tensorboard(root, vocoder_dir):
    meta = json.loads((vocoder_dir / "vocoder.json").read_text())
    assert meta["sample_rate"] == 24000 and meta["mel"]["hop"] == 240
    assert meta["defaults"]["steps"] == 10
    for name in ("flow.pt", "generator.pt"):
        sd = torch.load(vocoder_dir / name, weights_only=True)
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    m = json.loads((vocoder_dir / "metrics.json").read_text())
    assert m["flow"]["steps"] == 16 and m["generator"]["steps"] == 12
    assert m["train_clips"] == 36  # 18 answers + the 18 rejected answers of the train pairs
    # codes are embedded from the tokenizer's own code vectors (k-means centroids, VQ codes)
    sd = torch.load(vocoder_dir / "flow.pt", weights_only=True)
    tok = AudioTokenizer.load(json.loads((vocoder_dir / "artifact.json").read_text())["upstream"]["tokenizer"])
    assert sd["encoder.ling.vectors"].shape == tok.ling.codebook.shape
    assert sd["encoder.sem.vectors"].shape == tok.sem.vq.embed.shape
    assert not (vocoder_dir / CKPT_DIR).exists()  # resume checkpoints are not part of the artifact
    info = json.loads((vocoder_dir / "artifact.json").read_text())
    assert set(info["upstream"]) == {"corpus", "tokenizer", "tokens"}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for phase, scalar, audio in (("generator", "gen/train_loss", "generator/"), ("flow", "flow/val_mel_l1", "vocoder/")):
        ea = EventAccumulator(str(root / "runs" / "vocoder" / vocoder_dir.name / phase), size_guidance={"audio": 0})
        ea.Reload()
        assert scalar in ea.Tags()["scalars"], ea.Tags()["scalars"]
        assert any(t.startswith(audio) for t in ea.Tags()["audio"]), ea.Tags()["audio"]


def test_rerun_reuses_the_artifact(root, vocoder_dir, capsys):
    stamp = (vocoder_dir / "flow.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["train", "vocoder", "-e", "tiny", "--quiet", *_overrides(root)]) == 0
    assert "vocoder: reusing" in capsys.readouterr().out
    assert (vocoder_dir / "flow.pt").stat().st_mtime_ns == stamp


# ----- decoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("n_ling, sem_extra", [(2, 0), (17, 0), (17, 1), (40, -1), (41, 0)])
def test_output_length_matches_the_codes_duration(voc, n_ling, sem_extra):
    wav = voc.decode(*_codes(voc, n_ling, sem_extra=sem_extra))
    assert wav.dim() == 1 and wav.dtype == torch.float32
    assert len(wav) == n_ling * SAMPLES_PER_LING == voc.samples_for(n_ling)  # N / 16.67 s at 24 kHz
    assert wav.abs().max() <= 1.0 and torch.isfinite(wav).all()


def test_resynthesis_of_real_speech_has_its_duration(voc, upstream):
    from aqaa.audio import load_wav
    from aqaa.corpus.manifest import read_dialogues

    d = read_dialogues(upstream["corpus"], "test")[0]
    wav24, _ = load_wav(upstream["corpus"] / d.answer_audio_24k)
    tok = AudioTokenizer.load(upstream["tokenizer"])
    ling, sem = tok.encode(wav24, 24000)
    out = voc.decode(ling, sem)
    # round(n / 960) codes: at most half a linguistic code (720 samples at 24 kHz) off, plus a frame
    assert abs(len(out) - len(wav24)) <= SAMPLES_PER_LING // 2 + 240
    cached = next(x for x in load_tokens(upstream["tokens"], "test")["dialogues"] if x["id"] == d.id)["answer"]
    assert len(voc.decode(cached["ling"], cached["sem"])) == len(cached["ling"]) * SAMPLES_PER_LING


def test_decoding_is_deterministic_under_a_seed(voc, vocoder_dir):
    ling, sem = _codes(voc, 12)
    a = voc.decode(ling, sem, seed=3)
    assert torch.equal(a, voc.decode(ling, sem, seed=3))
    assert torch.equal(a, Vocoder.load(vocoder_dir).decode(torch.tensor(ling), tuple(sem), seed=3))
    assert not torch.equal(a, voc.decode(ling, sem, seed=4))


def test_steps_and_guidance_take_effect(voc):
    ling, sem = _codes(voc, 10)
    outs = {}
    for steps, guidance, nfe in ((3, 0.0, 3), (3, 0.5, 6), (5, 0.5, 10), (5, 1.5, 10)):
        outs[steps, guidance] = voc.decode(ling, sem, steps=steps, guidance=guidance)
        assert voc.last_stats["nfe"] == nfe  # CFG adds the unconditional evaluation per step
        assert voc.last_stats["steps"] == steps and voc.last_stats["guidance"] == guidance
    assert not torch.equal(outs[3, 0.0], outs[3, 0.5])
    assert not torch.equal(outs[3, 0.5], outs[5, 0.5])
    assert not torch.equal(outs[5, 0.5], outs[5, 1.5])
    voc.decode(ling, sem)
    assert voc.last_stats["nfe"] == 10 and voc.last_stats["rtf"] > 0  # defaults: 10 steps, no guidance


@pytest.mark.parametrize("ling, sem, match", [
    ([], [1, 2, 3], "linguistic codes are empty"),
    ([1, 2], [], "semantic codes are empty"),
    ([1, 64], [1, 2, 3], "linguistic code 64 at position 1 is outside the codebook \\[0, 64\\)"),
    ([1, 2], [1, -1, 3], "semantic code -1 .* outside the codebook \\[0, 128\\)"),
    ([1] * 10, [1] * 30, "disagree in duration: 10 linguistic codes = 0.60 s but 30 semantic codes = 1.20 s"),
    ([1] * 20, [1] * 24, "disagree in duration"),
    ([[1, 2]], [1, 2, 3], "one flat sequence"),
    ([1.5, 2], [1, 2, 3], "integers"),
    ("ab", [1, 2, 3], "integers"),
])
def test_bad_codes_raise_a_clear_value_error(voc, ling, sem, match):
    with pytest.raises(ValueError, match=match):
        voc.decode(ling, sem)


def test_bad_settings_raise(voc):
    ling, sem = _codes(voc, 4)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        voc.decode(ling, sem, steps=0)
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        voc.decode(ling, sem, guidance=-1)
    with pytest.raises(ValueError, match="unknown wave backend 'hifigan'"):
        voc.decode(ling, sem, wave="hifigan")


def test_load_names_the_missing_file(tmp_path, vocoder_dir):
    with pytest.raises(FileNotFoundError, match="no vocoder.json in .*aqaa train vocoder"):
        Vocoder.load(tmp_path)
    (tmp_path / "vocoder.json").write_text((vocoder_dir / "vocoder.json").read_text())
    with pytest.raises(FileNotFoundError, match="vocoder weights missing: .*flow.pt"):
        Vocoder.load(tmp_path)


# ----- Griffin-Lim fallback -----------------------------------------------------------------


def test_griffin_lim_fallback_without_a_trained_generator(tmp_path, upstream, voc):
    cfg = load_config("tiny", [*_overrides(tmp_path), "vocoder.generator=griffinlim", "vocoder.flow_max_steps=4"])
    art = run_vocoder(cfg, progress=False, log=lambda *_: None, **upstream)
    assert art.complete and not (art.path / "generator.pt").exists()
    assert json.loads((art.path / "vocoder.json").read_text())["generator"] is None
    gl = Vocoder.load(art.path)
    assert not gl.has_generator
    ling, sem = _codes(gl, 9)
    wav = gl.decode(ling, sem)
    assert len(wav) == 9 * SAMPLES_PER_LING and torch.isfinite(wav).all() and wav.abs().max() > 0
    assert gl.last_stats["wave"] == "griffinlim"
    with pytest.raises(ValueError, match="no trained generator"):
        gl.decode(ling, sem, wave="istft")
    # a vocoder with a generator can still be asked for Griffin-Lim
    assert len(voc.decode(ling, sem, wave="griffinlim")) == 9 * SAMPLES_PER_LING


def test_griffin_lim_inverts_a_mel():
    cfg = MelConfig()
    t = torch.arange(24000) / 24000
    wav = 0.5 * torch.sin(2 * torch.pi * 220 * t)
    mel = LogMel(cfg)(wav)
    out = GriffinLimVocoder(cfg, n_iter=16)(mel)
    assert len(out) == mel.shape[-1] * cfg.hop
    T = mel.shape[-1]
    assert (LogMel(cfg)(out)[:, 5 : T - 5] - mel[:, 5:-5]).abs().mean() < 1.0


# ----- training robustness: resume and NaN ------------------------------------------------


class _Killed(Exception):
    pass


class _KillAt(Callback):
    """Simulates a kill in the flow phase after ``step`` optimizer steps."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, *args):
        if isinstance(pl_module, FlowModule) and trainer.global_step >= self.step:
            raise _Killed("simulated kill")


class _StartSteps(Callback):
    def __init__(self):
        self.starts = {}

    def on_train_start(self, trainer, pl_module):
        self.starts[type(pl_module).__name__] = trainer.global_step


class _PoisonAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, *args):
        if isinstance(pl_module, FlowModule) and trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.flow.estimator.proj.weight.fill_(float("nan"))


def _small_cfg(root, *extra):
    return load_config("tiny", [*_overrides(root), "vocoder.ckpt_every=4", "vocoder.gen_max_steps=4", *extra])


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, upstream):
    cfg = _small_cfg(tmp_path, "vocoder.flow_max_steps=10")
    with pytest.raises(_Killed):
        run_vocoder(cfg, progress=False, callbacks=[_KillAt(6)], log=lambda *_: None, **upstream)
    (work,) = list((tmp_path / "checkpoints" / ".partial").iterdir())
    assert (work / CKPT_DIR / "flow" / "last.ckpt").exists() and (work / "generator.pt").exists()
    assert not any(p.name.startswith("vocoder-") for p in (tmp_path / "checkpoints").iterdir())
    gen = torch.load(work / "generator.pt", weights_only=True)

    starts = _StartSteps()
    art = run_vocoder(cfg, progress=False, callbacks=[starts], log=lambda *_: None, **upstream)
    assert starts.starts == {"FlowModule": 4}  # flow continued from its step-4 checkpoint; generator kept
    after = torch.load(art.path / "generator.pt", weights_only=True)
    assert all(torch.equal(gen[k], after[k]) for k in gen)
    assert json.loads((art.path / "vocoder.json").read_text())["trained_steps"] == {"flow": 10, "generator": 4}
    assert ArtifactStore(cfg.paths.checkpoints).latest("vocoder") == art.path


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, upstream):
    cfg = _small_cfg(tmp_path, "vocoder.flow_max_steps=12")
    with pytest.raises(TrainingDiverged, match=r"vocoder flow: loss became nan at step 5.*last good checkpoint") as e:
        run_vocoder(cfg, progress=False, callbacks=[_PoisonAt(5)], log=lambda *_: None, **upstream)
    assert "vocoder.flow_lr" in str(e.value)
    (work,) = list((tmp_path / "checkpoints" / ".partial").iterdir())
    ckpt = torch.load(work / CKPT_DIR / "flow" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


# ----- config and nets ----------------------------------------------------------------------


@pytest.mark.parametrize("override, key", [("vocoder.generator=hifigan", "vocoder.generator"),
                                           ("vocoder.transformers=[1]", "vocoder.transformers"),
                                           ("vocoder.channels=[30,32]", "vocoder.channels"),
                                           ("vocoder.steps=0", "vocoder.steps"),
                                           ("vocoder.cond_dropout=1.0", "vocoder.cond_dropout"),
                                           ("vocoder.flow_stepz=3", "vocoder.flow_stepz")])
def test_bad_vocoder_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config("tiny", [override])


def test_inference_settings_are_not_part_of_the_artifact_key(tmp_path):
    from aqaa.stages import vocoder_spec

    a = vocoder_spec(load_config("tiny", []))
    assert a == vocoder_spec(load_config("tiny", ["vocoder.steps=25", "vocoder.guidance=0", "vocoder.val_every=3"]))
    assert a != vocoder_spec(load_config("tiny", ["vocoder.flow_lr=0.01"]))


def test_flow_learns_and_handles_any_length():
    torch.manual_seed(0)
    cfg = FlowConfig(n_linguistic=8, n_semantic=8, n_mels=16, d_enc=16, channels=[16, 16], transformers=[0, 1],
                     n_heads=2, enc_layers=1, enc_res_blocks=1)
    flow = TokenToMel(cfg)
    ling, sem = torch.randint(0, 8, (2, 6)), torch.randint(0, 8, (2, 9))
    mel = torch.randn(2, 16, 36)
    mask = torch.ones(2, 1, 36)
    mask[1, :, 30:] = 0
    opt = torch.optim.Adam(flow.parameters(), 1e-2)
    losses = []
    for _ in range(40):
        out = flow.loss(ling, sem, mel, mask)
        loss = out["cfm"] + out["prior"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    flow.eval()
    for T in (6, 18, 42):  # odd frame counts at the U-Net's lower level are padded inside
        out = flow.sample(ling[:1, : T // 6], sem[:1, : T // 4], torch.ones(1, 1, T), steps=2)
        assert out.shape == (1, 16, T) and torch.isfinite(out).all()


def test_generator_length():
    g = Generator(GeneratorConfig(n_mels=80, dim=16, intermediate=32, n_layers=1))
    assert g(torch.randn(2, 80, 7)).shape == (2, 7 * 240)
    assert g(torch.randn(1, 80, 41), length=9600).shape == (1, 9600)


# ----- judges (text only here; the models are exercised in the slow test) -------------------


def test_text_normalisation_for_wer():
    from aqaa.judges import normalize_text, number_to_words, wer

    assert normalize_text("The answer is 30.") == "the answer is thirty"
    assert normalize_text("It's the 3rd, 1,250 times!") == "it's the third one thousand two hundred fifty times"
    assert number_to_words(407) == "four hundred seven"
    assert wer(["the answer is thirty"], ["The answer is 30!"]) == 0.0
    assert wer(["a b c d"], ["a x c"]) == pytest.approx(0.5)


@pytest.mark.slow
def test_judges_on_real_speech(upstream):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("onnxruntime")
    from aqaa.audio import load_wav
    from aqaa.corpus.manifest import read_dialogues
    from aqaa.judges import AsrJudge, DnsMos, wer

    d = read_dialogues(upstream["corpus"], "test")[0]
    wav, sr = load_wav(upstream["corpus"] / d.answer_audio_24k)
    assert wer([d.answer_text], [AsrJudge().transcribe(wav, sr)]) < 0.5
    scores = DnsMos()(wav, sr)
    assert set(scores) == {"p808_mos", "ovrl_mos", "sig_mos", "bak_mos"}
    assert all(1 <= v <= 5 for v in scores.values())
