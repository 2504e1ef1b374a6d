"""`aqaa data build` through the real entry point, on the tiny config."""

import hashlib
import json

import pytest
import soundfile as sf

from aqaa.cli import main
from aqaa.corpus.manifest import read_dialogues, read_pairs
from aqaa.corpus.templates import CATEGORIES
from datamodules import SpokenQADataModule


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck")
    assert main(["data", "build", "-e", "tiny", f"paths.checkpoints={root}", "--quiet"]) == 0
    latest = json.loads((root / "latest.json").read_text())
    from pathlib import Path

    return root, Path(latest["corpus"])


def test_counts_splits_and_files(tiny_corpus):
    root, corpus = tiny_corpus
    assert (corpus / "artifact.json").exists() and (corpus / "config.yaml").exists()
    stats = json.loads((corpus / "stats.json").read_text())
    for split, n in (("train", 3), ("val", 1), ("test", 1)):
        rows = read_dialogues(corpus, split)
        assert {c: sum(r.category == c for r in rows) for c in CATEGORIES} == {c: n for c in CATEGORIES}
        assert stats["counts"][split] == {c: n for c in CATEGORIES}
        for r in rows:
            assert sf.info(str(corpus / r.query_audio)).samplerate == 16000
            assert sf.info(str(corpus / r.answer_audio)).samplerate == 16000
            assert sf.info(str(corpus / r.answer_audio_24k)).samplerate == 24000
            assert r.answer_key and r.answer_seconds > 0.3 and r.query_seconds > 0.5
            assert len(r.segments) == (2 if r.category == "multi_state" else 1)
            for s in r.segments:
                assert (corpus / s.audio).exists() and (corpus / s.audio_24k).exists()
    voices = {r.query_voice for s in ("train", "val", "test") for r in read_dialogues(corpus, s)}
    assert len(voices) >= 4  # several query voices
    assert any(v.startswith("piper:") for v in voices) and any(v.startswith("espeak:") for v in voices)


def test_test_split_is_unseen(tiny_corpus):
    _, corpus = tiny_corpus
    train, test = read_dialogues(corpus, "train"), read_dialogues(corpus, "test")
    assert not {r.template_id for r in train} & {r.template_id for r in test}
    assert not {r.query_text for r in train} & {r.query_text for r in test}


def test_preference_pairs(tiny_corpus):
    _, corpus = tiny_corpus
    pairs = read_pairs(corpus, "train")
    items = {r.id: r for r in read_dialogues(corpus, "train")}
    assert len(pairs) == len(items)
    for p in pairs:
        assert [s.text for s in p.chosen] == [s.text for s in items[p.item_id].segments]
        assert (corpus / p.rejected_audio).exists()
        if p.kind == "wrong_state":
            assert [s.text for s in p.rejected] == [s.text for s in p.chosen]
            assert [s.state for s in p.rejected] != [s.state for s in p.chosen]
        else:
            assert p.kind == "wrong_answer"
            assert items[p.item_id].answer_key not in " ".join(s.text.lower() for s in p.rejected)


def test_rebuild_reuses_artifact(tiny_corpus, capsys):
    root, corpus = tiny_corpus
    before = (corpus / "artifact.json").stat().st_mtime_ns
    # corpus.workers changes how, not what: same artifact
    assert main(["data", "build", "-e", "tiny", f"paths.checkpoints={root}", "corpus.workers=2", "--quiet"]) == 0
    assert "reusing" in capsys.readouterr().out
    assert (corpus / "artifact.json").stat().st_mtime_ns == before


def _digest(corpus, rows):
    h = hashlib.sha256()
    for r in rows:
        for rel in (r.query_audio, r.answer_audio_24k):
            h.update((corpus / rel).read_bytes())
    return h.hexdigest()


def test_deterministic_under_seed(tiny_corpus, tmp_path):
    """A second build from scratch (other root, two processes) gives identical audio."""
    _, corpus = tiny_corpus
    other = tmp_path / "ck2"
    args = ["data", "build", "-e", "tiny", f"paths.checkpoints={other}", "corpus.workers=2", "--quiet"]
    assert main(args) == 0
    corpus2 = other / corpus.name  # same config -> same key
    assert corpus2.exists()
    for split in ("train", "test"):
        a, b = read_dialogues(corpus, split), read_dialogues(corpus2, split)
        assert [r.query_text for r in a] == [r.query_text for r in b]
        assert _digest(corpus, a) == _digest(corpus2, b)


def test_datamodule_batches(tiny_corpus):
    _, corpus = tiny_corpus
    dm = SpokenQADataModule(corpus, batch_size=4)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["query_wav"].shape[0] == 4 and batch["query_wav"].shape[1] == int(batch["query_lengths"].max())
    assert len(batch["answer_text"]) == 4
    dm24 = SpokenQADataModule(corpus, batch_size=2, rate=24000, with_query=False)
    dm24.setup()
    b = next(iter(dm24.val_dataloader()))
    assert "query_wav" not in b and b["answer_wav"].shape[0] == 2


# state -> (measure, direction) it names, against the same words in the neutral voice
DIRECTIONS = {
    "slow": [("rate_ratio", "<")], "fast": [("rate_ratio", ">")],
    "loud": [("rms_db_diff", ">")], "soft": [("rms_db_diff", "<")],
    "high": [("f0_ratio", ">")], "low": [("f0_ratio", "<")],
    "whisper": [("voiced_diff", "<")],
    "happy": [("f0_ratio", ">"), ("rate_ratio", ">")], "sad": [("f0_ratio", "<"), ("rate_ratio", "<")],
    "child": [("f0_ratio", ">")],
}
MARGIN = {"rate_ratio": 0.15, "f0_ratio": 0.10, "rms_db_diff": 3.0, "voiced_diff": 0.3}


def test_corpus_voice_states_move_in_their_named_direction(tiny_corpus):
    """Measured on the corpus's own answer audio, paired with the same words in neutral."""
    _, corpus = tiny_corpus
    table = json.loads((corpus / "stats.json").read_text())["voice_states"]
    checked = 0
    for state, checks in DIRECTIONS.items():
        if state not in table:
            continue
        for key, sign in checks:
            value, margin = table[state][key], MARGIN[key]
            ref = 1.0 if key.endswith("ratio") else 0.0
            assert (value < ref - margin) if sign == "<" else (value > ref + margin), (state, key, value)
            checked += 1
    assert checked >= 8  # the tiny corpus holds most states
