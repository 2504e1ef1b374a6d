"""The token-layout contract of DESIGN.md sections 3 and 9."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqaa.tokens import LAYOUTS, SPLICES, Segment, Vocab

V = Vocab(text_size=256)
RATIOS = [(10, 15), (3, 5), (6, 50), (1, 5), (4, 10)]


def test_id_space():
    v = Vocab(text_size=100)
    specials = [v.pad, v.bos, v.eos, v.human, v.assistant, v.audio_start, v.audio_end, v.text_end]
    assert len(set(specials)) == 8
    assert all(s not in v.text_range and s < v.audio_offset for s in specials)
    assert len(v.text_range) == 100 and v.text_range.stop == v.audio_offset
    assert v.size == v.audio_offset + 1024 + 4096
    assert v.interleave_audio([0, 1023], [0, 1, 4095]) == [
        v.audio_offset,
        v.audio_offset + 1023,
        v.audio_offset + 1024,
        v.audio_offset + 1025,
        v.audio_offset + 1024 + 4095,
    ]


def test_interleave_pattern_and_truncation():
    ling, sem = [1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15, 16]
    ids = V.interleave_audio(ling, sem)  # groups = min(5//2, 7//3) = 2
    o, s0 = V.audio_offset, V.audio_offset + 1024
    assert ids == [o + 1, o + 2, s0 + 10, s0 + 11, s0 + 12, o + 3, o + 4, s0 + 13, s0 + 14, s0 + 15]
    assert V.split_audio(ids) == ([1, 2, 3, 4], [10, 11, 12, 13, 14, 15])


def test_interleave_rejects_out_of_range_codes():
    with pytest.raises(ValueError, match="linguistic code 1024"):
        V.interleave_audio([0, 1024], [0, 0, 0])
    with pytest.raises(ValueError, match="semantic code -1"):
        V.interleave_audio([0, 1], [0, 0, -1])
    with pytest.raises(ValueError, match="not an audio id"):
        V.split_audio([V.bos])


@given(st.integers(0, 12).flatmap(lambda g: st.tuples(
    st.lists(st.integers(0, 1023), min_size=2 * g, max_size=2 * g),
    st.lists(st.integers(0, 4095), min_size=3 * g, max_size=3 * g))))
def test_split_inverts_interleave(codes):
    ling, sem = codes
    assert V.split_audio(V.interleave_audio(ling, sem)) == (ling, sem)


def test_interleaved_layout_examples():
    t = [V.text_id(i) for i in range(4)]  # 4 text ids
    a = V.interleave_audio(list(range(6)), list(range(9)))  # 15 audio ids, 3 groups
    te, s, e = V.text_end, V.audio_start, V.audio_end
    seg = [Segment(text=t, audio=a)]
    # text runs out first: text_end at the next text position, then the rest of the audio
    assert V.layout(seg, "interleaved", ratio=(2, 5)) == [s, *t[0:2], *a[0:5], *t[2:4], *a[5:10], te, *a[10:15], e]
    # audio runs out first: the rest of the text, then text_end
    assert V.layout(seg, "interleaved", ratio=(1, 10)) == [s, t[0], *a[0:10], t[1], *a[10:15], *t[2:4], te, e]
    assert V.layout(seg, "text_first") == [*t, s, *a, e]
    assert V.layout(seg, "audio_only") == [s, *a, e]


def test_ratio_must_hold_whole_groups():
    seg = [Segment(text=[V.text_id(1)], audio=[])]
    with pytest.raises(ValueError, match="multiple of 5"):
        V.layout(seg, "interleaved", ratio=(10, 14))
    with pytest.raises(ValueError, match="needs ratio"):
        V.layout(seg, "interleaved")
    with pytest.raises(ValueError, match="unknown layout"):
        V.layout(seg, "sideways")
    with pytest.raises(ValueError, match="unknown splice"):
        V.layout(seg, "text_first", splice="glue")


def test_splice_methods_example():
    s, e, te = V.audio_start, V.audio_end, V.text_end
    t1, t2 = [V.text_id(1)], [V.text_id(2)]
    a1, a2 = V.interleave_audio([1, 1], [1, 1, 1]), V.interleave_audio([2, 2], [2, 2, 2])
    segs = [Segment(t1, a1, "happy"), Segment(t2, a2, "sad")]
    assert V.layout(segs, "text_first", splice="marker_preserving") == [*t1, s, *a1, e, *t2, s, *a2, e]
    assert V.layout(segs, "text_first", splice="marker_removal") == [*t1, s, *a1, *t2, *a2, e]
    assert V.layout(segs, "text_first", splice="pre_interleaved") == [*t1, *t2, s, *a1, *a2, e]
    assert V.layout(segs, "interleaved", (1, 5), splice="marker_removal") == [s, *t1, *a1, te, *t2, *a2, te, e]


def test_dialogue_mask_covers_exactly_the_response():
    q = V.interleave_audio([3, 4], [5, 6, 7])
    resp = V.layout([Segment([V.text_id(65)], q)], "text_first")
    ids, mask = V.dialogue(q, resp)
    assert ids[: len(V.prompt(q))] == [V.bos, V.human, V.audio_start, *q, V.audio_end, V.assistant]
    assert ids[-1] == V.eos
    masked = [i for i, m in zip(ids, mask) if m]
    assert masked == resp + [V.eos]
    assert mask == [False] * len(V.prompt(q)) + [True] * (len(resp) + 1)


# ----- property tests: every layout x splice ------------------------------------------

text_ids = st.lists(st.sampled_from(list(V.text_range)), min_size=1, max_size=30)
groups = st.integers(1, 8).flatmap(lambda g: st.tuples(
    st.lists(st.integers(0, 1023), min_size=2 * g, max_size=2 * g),
    st.lists(st.integers(0, 4095), min_size=3 * g, max_size=3 * g)))
segments_st = st.lists(
    st.tuples(text_ids, groups).map(lambda x: Segment(text=x[0], audio=V.interleave_audio(*x[1]))),
    min_size=1, max_size=3)


def _expected(segs, layout, splice):
    """What parse should recover: per segment, or merged where the splice loses boundaries."""
    keep_text = layout != "audio_only"
    per_seg = [(s.text if keep_text else [], s.audio) for s in segs]
    merged = [([t for s in segs for t in s.text] if keep_text else [], [a for s in segs for a in s.audio])]
    if splice == "pre_interleaved" or (splice == "marker_removal" and layout == "audio_only"):
        return merged
    return per_seg


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("splice", SPLICES)
@settings(max_examples=60, deadline=None)
@given(segs=segments_st, ratio=st.sampled_from(RATIOS))
def test_parse_inverts_layout(layout, splice, segs, ratio):
    r = ratio if layout == "interleaved" else None
    ids = V.layout(segs, layout, ratio=r, splice=splice)
    # markers: one pair per segment unless the splice merges them
    n_pairs = 1 if splice in ("marker_removal", "pre_interleaved") else len(segs)
    assert ids.count(V.audio_start) == n_pairs and ids.count(V.audio_end) == n_pairs
    # interleaved chunks never split a 2:3 group
    if layout == "interleaved":
        run = 0
        for i in ids + [V.pad]:
            if V.is_audio(i):
                run += 1
            else:
                assert run % 5 == 0, ids
                run = 0
    # the audio stream is kept whole and in order by every layout and splice
    assert [i for i in ids if V.is_audio(i)] == [a for s in segs for a in s.audio]
    res = V.parse(ids + [V.eos], layout, ratio=r)
    assert res.errors == []
    assert [(s.text, s.audio) for s in res.segments] == _expected(segs, layout, splice)


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(-3, V.size + 3), max_size=60), layout=st.sampled_from(LAYOUTS))
def test_parse_never_raises_on_garbage(ids, layout):
    res = V.parse(ids, layout, ratio=(10, 15))
    assert isinstance(res.errors, list)
    for seg in res.segments:
        assert all(V.is_text(t) for t in seg.text) and all(V.is_audio(a) for a in seg.audio)


def test_parse_reports_errors():
    a = V.interleave_audio([1, 2], [3, 4, 5])
    res = V.parse([V.audio_start, *a], "audio_only")
    assert res.errors and "no audio_end" in res.errors[-1]
    res = V.parse([V.text_id(3), V.audio_start, *a, V.audio_end, V.bos], "text_first")
    assert any("unexpected id" in e for e in res.errors)
    assert res.segments[0].audio == a


@given(st.text(max_size=40))
def test_byte_tokenizer_round_trips_through_vocab_ids(text):
    from aqaa.text import ByteTokenizer

    tok = ByteTokenizer()
    ids = tok.to_ids(text, V)
    assert all(V.is_text(i) for i in ids)
    assert tok.from_ids(ids, V) == text
