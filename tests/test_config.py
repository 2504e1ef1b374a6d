"""Config errors fail before any work, naming the key; artifacts are keyed and atomic."""

import json

import pytest

from aqaa.artifacts import ArtifactStore
from aqaa.cli import main
from aqaa.config import ConfigError, load_config


def test_defaults_and_overrides():
    cfg = load_config("tiny", ["corpus.seed=7", "layout.ratio=[3,5]", "layout.layout=text_first"])
    assert cfg.corpus.seed == 7 and cfg.layout.ratio == [3, 5] and cfg.layout.layout == "text_first"
    assert cfg.corpus.per_category.train == 3  # from configs/experiments/tiny.yaml


@pytest.mark.parametrize(
    "override, key, hint",
    [
        ("corpus.per_categry.train=3", "corpus.per_categry", "allowed here: categories"),
        ("corpus.seed=abc", "corpus.seed", "could not be converted to Integer"),
        ("layout.ratio=[10,14]", "layout.ratio", "multiple of 5"),
        ("layout.layout=sideways", "layout.layout", "audio_only, text_first, interleaved"),
        ("layout.splice=glue", "layout.splice", "marker_preserving"),
        ("corpus.categories=[reasoning,poetry]", "corpus.categories", "unknown category 'poetry'"),
        ("corpus.per_category.test=0", "corpus.per_category.test", ">= 1"),
        ("text.size=300", "text.size", "exactly 256"),
        ("eval.vocoder_guidance=-1", "eval.vocoder_guidance", ">= 0"),
        ("nonsense=1", "nonsense", "allowed here"),
    ],
)
def test_bad_config_names_the_key(override, key, hint):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", [override])
    assert f"'{key}'" in str(e.value) and hint in str(e.value)


def test_bad_yaml_file_names_file_and_key(tmp_path):
    bad = tmp_path / "exp.yaml"
    bad.write_text("corpus:\n  sead: 3\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: unknown key 'corpus\.sead'"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="unknown experiment 'nope'"):
        load_config("nope")


def test_cli_config_error_exits_2_before_work(tmp_path, capsys):
    rc = main(["data", "build", "-e", "tiny", f"paths.checkpoints={tmp_path}", "layout.ratio=[2,7]"])
    assert rc == 2
    assert "layout.ratio" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_artifact_store_is_keyed_and_atomic(tmp_path):
    store = ArtifactStore(tmp_path)
    a = store.resolve("corpus", {"seed": 0})
    assert store.resolve("corpus", {"seed": 0}).path == a.path
    assert store.resolve("corpus", {"seed": 1}).path != a.path
    assert store.resolve("tokenizer", {"seed": 0}, upstream={"corpus": a}).path != store.resolve(
        "tokenizer", {"seed": 0}, upstream={"corpus": store.resolve("corpus", {"seed": 1})}).path
    work = store.begin(a)
    (work / "data.txt").write_text("x")
    assert not a.complete and not a.path.exists()  # partial work is not where readers look
    store.commit(a, work, {"seed": 0})
    assert a.complete and (a.path / "data.txt").read_text() == "x" and not work.exists()
    assert a.info()["spec"] == {"seed": 0}
    store.update_latest(corpus=a)
    assert json.loads((tmp_path / "latest.json").read_text()) == {"corpus": str(a.path)}
    # a fresh begin discards stale partial work unless resuming
    b = store.resolve("train", {"x": 1})
    w = store.begin(b)
    (w / "last.ckpt").write_text("1")
    assert (store.begin(b, resume=True) / "last.ckpt").exists()
    assert not (store.begin(b) / "last.ckpt").exists()
