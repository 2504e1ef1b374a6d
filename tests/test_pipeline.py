"""`aqaa pipeline`, `aqaa chat` and `aqaa eval` end to end on the tiny config."""

import json
from pathlib import Path

import pytest
import soundfile as sf

from aqaa.cli import main
from aqaa.metrics import chat_proxy
from aqaa.pipeline import STAGES


@pytest.fixture(scope="module")
def tiny_run(tiny_pipeline):
    return tiny_pipeline


def _artifacts(root: Path) -> set[str]:
    return {p.name for p in (root / "ck").iterdir() if (p / "artifact.json").exists()}


def test_latest_names_every_stage(tiny_run):
    root, _ = tiny_run
    latest = json.loads((root / "ck" / "latest.json").read_text())
    assert set(latest) == set(STAGES)
    for stage, where in latest.items():
        assert Path(where).name.startswith(f"{stage}-") and (Path(where) / "artifact.json").exists()
    m = json.loads((Path(latest["eval"]) / "metrics.json").read_text())
    assert {"chat_proxy", "factuality", "relevance", "text_audio_wer", "dnsmos_ovrl"} <= set(m["overall"])
    assert set(m["per_category"]) and {"ppl_text", "ppl_audio", "ppl_linguistic", "ppl_semantic"} <= set(m["ppl"])
    assert 1.0 <= m["overall"]["chat_proxy"] <= 5.0
    # each answer's chat_proxy is the documented formula of its own components, and the
    # overall one their mean
    for r in m["rows"]:
        assert r["chat_proxy"] == pytest.approx(chat_proxy(r["factuality"], r["relevance"], r["text_audio_wer"],
                                                           r["dnsmos_ovrl"], r["control_accuracy"]), nan_ok=True)
    scores = [r["chat_proxy"] for r in m["rows"] if r["chat_proxy"] == r["chat_proxy"]]
    assert m["overall"]["chat_proxy"] == pytest.approx(sum(scores) / len(scores))
    assert list((root / "runs").rglob("events.out.tfevents.*"))


def test_second_run_reuses_everything(tiny_run, capsys):
    root, args = tiny_run
    before = _artifacts(root)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert _artifacts(root) == before
    for stage in STAGES:
        assert f"{stage}: reusing" in out, stage


def test_merge_weights_change_reruns_only_merge_and_eval(tiny_run, capsys):
    root, args = tiny_run
    before = _artifacts(root)
    assert main(args + ["merge.weights=[1,1,1]"]) == 0
    new = _artifacts(root) - before
    assert sorted(n.split("-")[0] for n in new) == ["eval", "merge"]
    capsys.readouterr()


def test_chat_round_trip(tiny_run, capsys):
    root, _ = tiny_run
    corpus = Path(json.loads((root / "ck" / "latest.json").read_text())["corpus"])
    question = next((corpus / "audio" / "q").glob("*test*.wav"))
    out = root / "answer.wav"
    rc = main(["chat", "-e", "tiny", f"paths.checkpoints={root / 'ck'}", "--input", str(question),
               "--output", str(out), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"text", "segments", "seconds_to_first_audio", "real_time_factor"} <= set(res)
    assert sf.info(str(out)).samplerate == 24000
    assert res["parse_errors"] == []
    # a missing input is a clear error, not a traceback
    assert main(["chat", "-e", "tiny", f"paths.checkpoints={root / 'ck'}", "--input", str(root / "nope.wav"),
                 "--output", str(out)]) == 2


def test_eval_decodes_with_the_configs_vocoder_and_guidance(tiny_run, capsys):
    """latest.json naming another vocoder (say another experiment's) must not change what an
    eval measures; the guidance it decodes with is part of its key."""
    import shutil

    root, args = tiny_run
    latest_path = root / "ck" / "latest.json"
    saved = latest_path.read_text()
    latest = json.loads(saved)
    ours = Path(latest["vocoder"])
    decoy = ours.with_name("vocoder-decoy0000000")
    shutil.copytree(ours, decoy)
    try:
        latest_path.write_text(json.dumps({**latest, "vocoder": str(decoy)}))
        before = _artifacts(root)
        assert main(["eval", *args[1:], "eval.vocoder_guidance=0.5"]) == 0
        new = _artifacts(root) - before
        assert [n.split("-")[0] for n in new] == ["eval"]
        info = json.loads((root / "ck" / new.pop() / "artifact.json").read_text())
        assert Path(info["upstream"]["vocoder"]).name == ours.name
        assert info["spec"]["vocoder_guidance"] == 0.5
    finally:
        latest_path.write_text(saved)
        shutil.rmtree(decoy)
    capsys.readouterr()
