"""`aqaa data import`: bad rows are named by file and line; --skip-bad counts them."""

import json

import numpy as np
import pytest
import soundfile as sf

from aqaa.cli import main
from aqaa.config import load_config
from aqaa.corpus.manifest import ManifestError, read_dialogues
from aqaa.stages import run_import


def _tone(path, seconds, sr=22050):
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)


@pytest.fixture
def user_data(tmp_path):
    d = tmp_path / "mydata"
    (d / "wav").mkdir(parents=True)
    _tone(d / "wav" / "q1.wav", 1.0)
    _tone(d / "wav" / "a1.wav", 0.8, sr=44100)
    _tone(d / "wav" / "q2.wav", 1.2)
    (d / "wav" / "broken.wav").write_bytes(b"RIFF not really a wav")
    _tone(d / "wav" / "long.wav", 4.0)
    good = [
        {"query_audio": "wav/q1.wav", "query_text": "what is two plus two", "answer_text": "four",
         "answer_audio": "wav/a1.wav", "category": "reasoning", "answer_key": "four", "split": "train"},
        {"query_audio": "wav/q2.wav", "query_text": "hello", "answer_text": "hi there", "split": "test"},
    ]
    return d, good


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _cfg(tmp_path):
    return load_config("tiny", [f"paths.checkpoints={tmp_path / 'ck'}", "corpus.max_seconds=3"])


def test_import_good_manifest(user_data, tmp_path):
    d, good = user_data
    art, report = run_import(_cfg(tmp_path), _write(d / "m.jsonl", good), log=lambda *_: None)
    assert report["rows"] == 2 and report["skipped"] == 0
    train = read_dialogues(art.path, "train")
    assert len(train) == 1 and train[0].answer_key == "four"
    # resampled once to 16 kHz (tokenizers) and 24 kHz (vocoder targets)
    assert sf.info(str(art.path / train[0].query_audio)).samplerate == 16000
    assert sf.info(str(art.path / train[0].answer_audio_24k)).samplerate == 24000
    test = read_dialogues(art.path, "test")
    assert test[0].answer_audio is None  # a text-only (AQTA) row
    assert json.loads((tmp_path / "ck" / "latest.json").read_text())["corpus"] == str(art.path)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"query_audio": "wav/missing.wav", "query_text": "q", "answer_text": "a"}, "query_audio file not found"),
        ({"query_audio": "wav/broken.wav", "query_text": "q", "answer_text": "a"}, "not readable audio"),
        ({"query_audio": "wav/q1.wav", "query_text": "  ", "answer_text": "a"}, "'query_text' is missing or empty"),
        ({"query_audio": "wav/q1.wav", "query_text": "q", "answer_text": ""}, "'answer_text' is missing or empty"),
        ({"query_audio": "wav/long.wav", "query_text": "q", "answer_text": "a"}, "over the limit of 3.0 s"),
        ({"query_audio": "wav/q1.wav", "query_text": "q", "answer_text": "a", "split": "dev"}, "split 'dev'"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_row_names_file_and_line(user_data, tmp_path, row, message):
    d, good = user_data
    manifest = _write(d / "m.jsonl", [good[0], row, good[1]])
    with pytest.raises(ManifestError) as e:
        run_import(_cfg(tmp_path), manifest, log=lambda *_: None)
    assert f"{manifest}:2:" in str(e.value) and message in str(e.value)
    # nothing was written: a bad row costs no partial artifact
    assert not list((tmp_path / "ck").glob("corpus-*"))


def test_skip_bad_counts_and_cli(user_data, tmp_path, capsys):
    d, good = user_data
    rows = [good[0], {"query_audio": "wav/missing.wav", "query_text": "q", "answer_text": "a"}, "[1, 2]", good[1]]
    manifest = _write(d / "m.jsonl", rows)
    args = ["data", "import", str(manifest), "-e", "tiny", f"paths.checkpoints={tmp_path / 'ck'}"]
    assert main(args) == 2
    assert f"{manifest}:2: query_audio file not found" in capsys.readouterr().err
    assert main(args + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "imported 2 rows" in out and "skipped 2 bad rows" in out and f"{manifest}:3" in out
