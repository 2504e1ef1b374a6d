"""JSONL manifests: the corpus artifact's own, and users' manifests to import.

A corpus artifact holds ``{train,val,test}.jsonl`` beside ``audio/``; one dialogue a line,
paths relative to the manifest. Its rows (``Dialogue``) carry the query at 16 kHz and the
answer at 16 kHz (tokenizers) and 24 kHz (vocoder targets), whole and per segment.

A user's manifest (``aqaa data import``) needs less; each line is a JSON object with

    query_audio   path to the spoken question (any format soundfile reads, any rate)
    query_text    what the question says
    answer_text   the answer's text
    answer_audio  optional: path to the spoken answer (without it the row is AQTA only)
    category      optional, default "imported"
    answer_key    optional: a string a correct answer must contain (for factuality)
    split         optional: train / val / test (default: assigned by a stable hash, 90/5/5)
    segments      optional: [{"text", "state", "audio"}] for multi-state answers
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import soundfile as sf
from tqdm import tqdm

from ..audio import TOKENIZER_SR, VOCODER_SR, load_wav, save_wav

SPLITS = ("train", "val", "test")


@dataclass
class SegmentRow:
    text: str
    state: str = "neutral"
    audio: str | None = None  # 16 kHz, relative to the manifest
    audio_24k: str | None = None
    prosody: dict | None = None  # aqaa.prosody.measure of this segment's audio
    neutral_prosody: dict | None = None  # the same text in the neutral voice (not stored as audio)


@dataclass
class Dialogue:
    id: str
    split: str
    category: str
    query_text: str
    query_audio: str  # 16 kHz
    answer_text: str
    answer_key: str = ""
    answer_audio: str | None = None  # 16 kHz; None for text-only (AQTA) rows
    answer_audio_24k: str | None = None
    segments: list[SegmentRow] = field(default_factory=list)
    query_voice: str = ""
    query_style: str | None = None
    template_id: str = ""
    query_seconds: float = 0.0
    answer_seconds: float = 0.0

    @classmethod
    def from_json(cls, obj: dict) -> "Dialogue":
        obj = dict(obj)
        obj["segments"] = [SegmentRow(**s) for s in obj.get("segments", [])]
        return cls(**obj)


@dataclass
class PairRow:
    id: str
    item_id: str  # the Dialogue whose query both answers reply to
    split: str
    kind: str  # wrong_answer | wrong_state
    chosen: list[SegmentRow]
    rejected: list[SegmentRow]
    chosen_audio: str | None = None
    rejected_audio: str | None = None

    @classmethod
    def from_json(cls, obj: dict) -> "PairRow":
        obj = dict(obj)
        obj["chosen"] = [SegmentRow(**s) for s in obj["chosen"]]
        obj["rejected"] = [SegmentRow(**s) for s in obj["rejected"]]
        return cls(**obj)


class ManifestError(ValueError):
    """A bad manifest row; the message names the file and line."""


def write_jsonl(path: Path, rows) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(asdict(r) if hasattr(r, "__dataclass_fields__") else r) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-empty line; a JSON error names file and line."""
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            if not isinstance(obj, dict):
                raise ManifestError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_dialogues(corpus_dir: str | Path, split: str) -> list[Dialogue]:
    path = Path(corpus_dir) / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no manifest {path}: is {corpus_dir} a corpus artifact?")
    out = []
    for lineno, obj in read_jsonl(path):
        try:
            out.append(Dialogue.from_json(obj))
        except TypeError as e:
            raise ManifestError(f"{path}:{lineno}: {e}") from e
    return out


def read_pairs(corpus_dir: str | Path, split: str) -> list[PairRow]:
    path = Path(corpus_dir) / f"pairs_{split}.jsonl"
    if not path.exists():
        return []
    return [PairRow.from_json(obj) for _, obj in read_jsonl(path)]


# ----- import ---------------------------------------------------------------------


def _split_of(key: str) -> str:
    """Stable 90/5/5 split by a CRC of the row's identity (Python's hash() is salted)."""
    h = zlib.crc32(key.encode()) % 100
    return "test" if h < 5 else "val" if h < 10 else "train"


def _check_audio(path: Path, where: str, field_name: str, max_seconds: float) -> float:
    if not path.is_file():
        raise ManifestError(f"{where}: {field_name} file not found: {path}")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError subclasses
        raise ManifestError(f"{where}: {field_name} is not readable audio: {path} ({e})") from e
    seconds = info.frames / max(info.samplerate, 1)
    if info.frames == 0:
        raise ManifestError(f"{where}: {field_name} is empty: {path}")
    if seconds > max_seconds:
        raise ManifestError(
            f"{where}: {field_name} is {seconds:.1f} s long, over the limit of {max_seconds:.1f} s "
            f"(corpus.max_seconds): {path}"
        )
    return seconds


def _text(obj: dict, key: str, where: str, required: bool = True) -> str:
    val = obj.get(key)
    if val is None and not required:
        return ""
    if not isinstance(val, str) or not val.strip():
        raise ManifestError(f"{where}: '{key}' is missing or empty")
    return val.strip()


def validate_row(obj: dict, lineno: int, manifest: Path, max_seconds: float) -> dict:
    """Check one user row; returns it with absolute paths. Raises ManifestError."""
    where = f"{manifest}:{lineno}"
    base = manifest.parent
    row = {
        "query_text": _text(obj, "query_text", where),
        "answer_text": _text(obj, "answer_text", where),
        "category": obj.get("category") or "imported",
        "answer_key": (obj.get("answer_key") or "").strip().lower(),
        "split": obj.get("split") or None,
    }
    if row["split"] is not None and row["split"] not in SPLITS:
        raise ManifestError(f"{where}: split '{row['split']}' is not one of {', '.join(SPLITS)}")
    qa = obj.get("query_audio")
    if not isinstance(qa, str) or not qa:
        raise ManifestError(f"{where}: 'query_audio' is missing")
    row["query_audio"] = base / qa
    row["query_seconds"] = _check_audio(row["query_audio"], where, "query_audio", max_seconds)
    row["answer_audio"] = None
    if obj.get("answer_audio"):
        row["answer_audio"] = base / obj["answer_audio"]
        _check_audio(row["answer_audio"], where, "answer_audio", max_seconds)
    segs = []
    for k, s in enumerate(obj.get("segments") or []):
        if not isinstance(s, dict):
            raise ManifestError(f"{where}: segments[{k}] must be an object with text, state, audio")
        seg = {"text": _text(s, "text", f"{where}: segments[{k}]"), "state": s.get("state") or "neutral"}
        seg["audio"] = None
        if s.get("audio"):
            seg["audio"] = base / s["audio"]
            _check_audio(seg["audio"], where, f"segments[{k}].audio", max_seconds)
        segs.append(seg)
    row["segments"] = segs
    return row


def import_manifest(
    manifest: str | Path, out_dir: Path, max_seconds: float, skip_bad: bool = False
) -> dict:
    """Validate a user's manifest and write it as a corpus (16 and 24 kHz copies).

    Every row is checked before any audio is written, so a bad row costs nothing. With
    ``skip_bad`` bad rows are skipped and counted instead.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"manifest not found: {manifest}")
    good, bad = [], []
    for lineno, obj in read_jsonl(manifest) if not skip_bad else _lenient_lines(manifest, bad):
        try:
            good.append((lineno, validate_row(obj, lineno, manifest, max_seconds)))
        except ManifestError as e:
            if not skip_bad:
                raise
            bad.append(str(e))
    if not good:
        raise ManifestError(f"{manifest}: no usable rows ({len(bad)} bad)")
    by_split: dict[str, list[Dialogue]] = {s: [] for s in SPLITS}
    for lineno, row in tqdm(good, desc="import", unit="row"):
        did = f"{row['category']}-{lineno:06d}"
        split = row["split"] or _split_of(f"{row['query_audio']}|{row['query_text']}")
        q16 = f"audio/q/{did}.16k.wav"
        wav, _ = load_wav(row["query_audio"], TOKENIZER_SR)
        save_wav(out_dir / q16, wav, TOKENIZER_SR)
        d = Dialogue(
            id=did, split=split, category=row["category"], query_text=row["query_text"],
            query_audio=q16, answer_text=row["answer_text"], answer_key=row["answer_key"],
            query_seconds=row["query_seconds"],
        )
        if row["answer_audio"] is not None:
            d.answer_audio, d.answer_audio_24k, d.answer_seconds = _write_answer(
                row["answer_audio"], out_dir, f"audio/a/{did}"
            )
        for k, seg in enumerate(row["segments"]):
            sr = SegmentRow(text=seg["text"], state=seg["state"])
            if seg["audio"] is not None:
                sr.audio, sr.audio_24k, _ = _write_answer(seg["audio"], out_dir, f"audio/a/{did}.s{k}")
            d.segments.append(sr)
        if not d.segments:
            d.segments = [SegmentRow(text=d.answer_text, audio=d.answer_audio, audio_24k=d.answer_audio_24k)]
        by_split[split].append(d)
    for split, rows in by_split.items():
        write_jsonl(out_dir / f"{split}.jsonl", rows)
    return {"rows": len(good), "skipped": len(bad), "bad": bad[:20], "splits": {s: len(r) for s, r in by_split.items()}}


def _lenient_lines(manifest: Path, bad: list[str]):
    """Like read_jsonl, but a broken line is recorded in ``bad`` and skipped."""
    with open(manifest) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                bad.append(f"{manifest}:{lineno}: not a JSON object ({e})")
                continue
            yield lineno, obj


def _write_answer(src: Path, out_dir: Path, stem: str) -> tuple[str, str, float]:
    wav16, _ = load_wav(src, TOKENIZER_SR)
    wav24, _ = load_wav(src, VOCODER_SR)
    save_wav(out_dir / f"{stem}.16k.wav", wav16, TOKENIZER_SR)
    save_wav(out_dir / f"{stem}.24k.wav", wav24, VOCODER_SR)
    return f"{stem}.16k.wav", f"{stem}.24k.wav", len(wav16) / TOKENIZER_SR
