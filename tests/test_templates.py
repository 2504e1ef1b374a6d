"""The text side of the synthetic spoken-QA corpus (aqaa/corpus/templates.py)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqaa.corpus.templates import (
    CATEGORIES,
    OPPOSITE_STATE,
    PHRASE_PAIRS,
    PHRASES,
    QUERY_STYLES,
    SPLITS,
    STATES,
    TEMPLATES,
    AnswerSegment,
    PreferencePair,
    QAItem,
    contains_key,
    generate_items,
    normalize_text,
    number_to_words,
    numbers_in_text,
    pool_sizes,
    preference_pairs,
    template_ids,
    words_to_number,
)

SEED = 1234
N = 12  # per category for the quick checks


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", s.lower()).split())


@pytest.fixture(scope="module")
def small() -> dict[str, list[QAItem]]:
    return {s: generate_items(s, N, seed=SEED) for s in SPLITS}


@pytest.fixture(scope="module")
def full() -> dict[str, dict[str, list[QAItem]]]:
    """Every item every split can give, per category: value separation is checked exhaustively."""
    sizes = pool_sizes()
    return {s: {c: generate_items(s, sizes[c][s], seed=SEED, categories=(c,)) for c in CATEGORIES} for s in SPLITS}


def _items(full, split, *cats):
    return [it for c in (cats or CATEGORIES) for it in full[split][c]]


def _some(full, *splits, cap=800):
    """Per-item checks: every item, except at most ``cap`` per category and split (multi-state is huge)."""
    return [it for s in splits for c in CATEGORIES for it in full[s][c][:cap]]


# ----------------------------------------------------------------------------- shape


def test_every_category_in_every_split_with_unique_ids(small):
    all_ids = []
    for split, items in small.items():
        counts = Counter(it.category for it in items)
        assert counts == {c: N for c in CATEGORIES}
        assert all(it.split == split for it in items)
        all_ids += [it.id for it in items]
        for it in items:
            assert re.fullmatch(rf"{it.category}-{split}-\d{{4}}", it.id)
    assert len(all_ids) == len(set(all_ids))


def test_items_are_distinct_within_a_split(full):
    for split in SPLITS:
        seen = [(it.query_text, it.query_style, it.answer_text) for it in _items(full, split)]
        assert len(seen) == len(set(seen))


def test_category_subset_and_zero():
    items = generate_items("train", 3, seed=0, categories=("knowledge", "role_play"))
    assert Counter(it.category for it in items) == {"knowledge": 3, "role_play": 3}
    assert generate_items("val", 0, seed=0) == []


def test_pool_sizes_cover_the_configs():
    sizes = pool_sizes()
    assert set(sizes) == set(CATEGORIES)
    for c in CATEGORIES:
        assert sizes[c]["train"] >= 500, c
        assert sizes[c]["val"] >= 100, c
        assert sizes[c]["test"] >= 100, c


def test_too_many_items_names_category_and_maximum():
    mx = pool_sizes()["knowledge"]["test"]
    generate_items("test", mx, seed=0, categories=("knowledge",))  # exactly the maximum is fine
    with pytest.raises(ValueError, match=rf"knowledge.*maximum {mx}"):
        generate_items("test", mx + 1, seed=0, categories=("knowledge",))


@pytest.mark.parametrize("kwargs", [dict(split="dev"), dict(categories=("singing",)), dict(per_category=-1)])
def test_bad_arguments(kwargs):
    args = dict(split="train", per_category=2, seed=0) | kwargs
    with pytest.raises(ValueError):
        generate_items(**args)


def test_text_is_short_plain_ascii_and_states_valid(full):
    for it in _some(full, *SPLITS):
        for s in (it.query_text, it.answer_text, it.answer_key):
            assert s.isascii() and not re.search(r"\d", s), s
        assert len(_norm(it.query_text).split()) < 15, it.query_text
        assert len(_norm(it.answer_text).split()) < 12, it.answer_text
        assert it.answer_key == it.answer_key.lower().strip() and it.answer_key == _norm(it.answer_key)
        assert all(s.state in STATES for s in it.answer_segments)
        assert len(it.answer_segments) == (2 if it.category == "multi_state" else 1)
        assert it.template_id in TEMPLATES and it.template_id.startswith(it.category + ".")


def test_states_per_category(small):
    for it in (x for items in small.values() for x in items):
        states = [s.state for s in it.answer_segments]
        if it.category == "voice_control":
            assert states[0] in ("slow", "fast", "loud", "soft", "high", "low", "whisper")
        elif it.category == "multi_state":
            assert states[0] != states[1]
            assert set(states) <= {"happy", "sad", "slow", "fast", "loud", "soft", "high", "low"}
        elif it.category == "role_play":
            assert states[0] in ("robot", "child")
        else:
            assert states == ["neutral"]


def test_query_style_only_for_voice_understanding_and_truthful(full):
    for it in _some(full, *SPLITS):
        if it.category != "voice_understanding":
            assert it.query_style is None
            continue
        assert it.query_style in QUERY_STYLES
        fam = it.template_id.split(".")[1]
        if fam == "whisper":
            if it.query_style == "whisper":
                assert it.answer_text == "Yes, you are whispering." and it.answer_key == "you are whispering"
            else:
                assert it.answer_text == "No, you are not whispering." and it.answer_key == "not whispering"
        else:
            assert it.query_style in (("fast", "slow") if fam == "rate" else ("high", "low"))
            assert it.answer_key == it.query_style and it.answer_text == f"Your voice is {it.query_style}."


def test_answer_key_is_in_the_answer(full):
    for it in _some(full, *SPLITS):
        assert _norm(it.answer_key) in _norm(it.answer_text), (it.answer_key, it.answer_text)
        assert contains_key(it.answer_text, it.answer_key)


def test_answers_are_right(full):
    """Spot-check the arithmetic and spelling answers from the query text alone."""
    for it in _items(full, "train", "reasoning") + _items(full, "test", "reasoning"):
        nums = numbers_in_text(it.query_text)
        fam = it.template_id.split(".")[1]
        ans = words_to_number(it.answer_key)
        if fam == "add":
            assert ans == nums[0] + nums[1]
        elif fam == "sub":
            assert ans == max(nums) - min(nums) > 0
        elif fam == "mul":
            assert ans == nums[0] * nums[1]
        elif fam == "compare":
            assert ans == (min(nums) if re.search(r"smaller|less", it.query_text) else max(nums))
        else:
            assert len(nums) == 3 and nums[2] - nums[1] == nums[1] - nums[0] == ans - nums[2]
    for it in _items(full, "train", "knowledge"):
        if it.template_id.startswith("knowledge.spelling."):
            word = normalize_text(it.answer_text).split()[0]
            assert it.answer_key == " ".join(word)


# ----------------------------------------------------------------------------- splits


def test_test_templates_are_disjoint_from_train():
    for c in CATEGORIES:
        tr, te = set(template_ids(c, "train")), set(template_ids(c, "test"))
        assert len(tr) >= 4 and len(te) >= 2, c
        assert set(template_ids(c, "val")) == tr
        assert not tr & te
        # disjoint as text too, not just as ids
        assert not {_norm(TEMPLATES[t]) for t in tr} & {_norm(TEMPLATES[t]) for t in te}
        # every question family has both train and test phrasings
        fam = lambda ids: {t.split(".")[1] for t in ids}  # noqa: E731
        assert fam(tr) == fam(te), c


def test_items_use_their_splits_templates(full):
    for split in SPLITS:
        for c in CATEGORIES:
            used = {it.template_id for it in full[split][c]}
            assert used == set(template_ids(c, split)), (c, split)


def test_test_values_never_seen_in_train_or_val(full):
    seen = {c: {it.value_id for it in full["train"][c] + full["val"][c]} for c in CATEGORIES}
    test_vals = {c: {it.value_id for it in full["test"][c]} for c in CATEGORIES}
    for c in CATEGORIES:
        assert all(test_vals[c]) and all(seen[c])
        assert not test_vals[c] & seen[c], c
    # and across categories (role-play reuses the reasoning / knowledge values, voice
    # understanding the voice-control phrases)
    assert not set().union(*test_vals.values()) & set().union(*seen.values())


def test_reasoning_operands_separated_in_the_text(full):
    """The numbers a test question mentions never occur as a set in any train/val question.

    Answer keys of arithmetic cannot be disjoint (seven is the answer to many sums), so the
    check is on operands: "three plus four" in test means no train question, of any
    operation or phrasing, about three and four (role-play arithmetic included).
    """
    def operand_sets(items):
        return {frozenset(numbers_in_text(it.query_text)) for it in items if numbers_in_text(it.query_text)}

    train = operand_sets(_items(full, "train", "reasoning", "role_play") + _items(full, "val", "reasoning", "role_play"))
    test = operand_sets(_items(full, "test", "reasoning", "role_play"))
    assert len(test) > 100
    assert not train & test


def test_knowledge_facts_separated_in_the_text(full):
    tr = _items(full, "train", "knowledge", "role_play") + _items(full, "val", "knowledge", "role_play")
    te = _items(full, "test", "knowledge", "role_play")
    # a fact's answer sentence does not depend on the phrasing: no test fact was answered in train
    fact = lambda it: it.answer_text if not it.answer_text.startswith("The answer is") else None  # noqa: E731
    assert not ({fact(i) for i in te} - {None}) & {fact(i) for i in tr}
    # capitals, animal sounds, opposites, spellings: the keys themselves are disjoint
    for fam in ("capital", "sound", "opposite", "spelling"):
        k_tr = {it.answer_key for it in tr if it.value_id.startswith(fam[:5])}
        k_te = {it.answer_key for it in te if it.value_id.startswith(fam[:5])}
        assert k_te and k_tr and not k_te & k_tr, fam
    # the asked-about subject (country, thing, animal, word), read off the answer sentence,
    # is never asked about in train within the same kind of fact
    def subjects(items):
        return {(it.value_id.split(":")[0], _norm(it.answer_text.split(" is ")[0].split(" says ")[0]))
                for it in items if fact(it)}

    assert not subjects(te) & subjects(tr)


def test_phrases_separated_in_the_text(full):
    said = lambda items: {_norm(s.text) for it in items for s in it.answer_segments}  # noqa: E731
    tr = _items(full, "train", "voice_control", "multi_state") + _items(full, "val", "voice_control", "multi_state")
    te = _items(full, "test", "voice_control", "multi_state")
    p_tr, p_te = said(tr), said(te)
    assert p_te and not p_te & p_tr
    # voice-control keys: disjoint, and no key is a word sequence inside another split's key
    k_tr = {it.answer_key for it in tr if it.category == "voice_control"}
    k_te = {it.answer_key for it in te if it.category == "voice_control"}
    assert not k_te & k_tr
    assert not any(contains_key(a, b) or contains_key(b, a) for a in k_te for b in k_tr)
    # multi-state keys (both phrases) disjoint
    assert not {it.answer_key for it in te if it.category == "multi_state"} & {
        it.answer_key for it in tr if it.category == "multi_state"}
    # no train phrase is spoken in a test voice-control / voice-understanding query
    padded = [f" {p} " for p in p_tr]
    for it in _items(full, "test", "voice_control", "voice_understanding"):
        q = f" {_norm(it.query_text)} "
        assert not any(p in q for p in padded), it.query_text


def test_phrase_tables_do_not_nest():
    allp = list(PHRASES) + [p for pair in PHRASE_PAIRS for p in pair]
    assert len(allp) == len(set(allp))
    padded = [f" {_norm(p)} " for p in allp]
    assert not [(a, b) for a in padded for b in padded if a != b and b in a]


def test_val_is_distinct_from_train_but_same_distribution(full):
    key = lambda it: (it.query_text, it.query_style, it.answer_text)  # noqa: E731
    tr, va = _items(full, "train"), _items(full, "val")
    assert not {key(i) for i in tr} & {key(i) for i in va}
    test_vals = {it.value_id for it in _items(full, "test")}
    assert not {it.value_id for it in va} & test_vals
    # val reuses train values (distinct items, same pools)
    assert len({it.value_id for it in va} & {it.value_id for it in tr}) > 0.5 * len({it.value_id for it in va})


# ----------------------------------------------------------------------------- determinism


def test_deterministic_and_seed_sensitive():
    a = [it.to_dict() for it in generate_items("train", 20, seed=7)]
    b = [it.to_dict() for it in generate_items("train", 20, seed=7)]
    c = [it.to_dict() for it in generate_items("train", 20, seed=8)]
    assert a == b
    assert a != c
    for cat in CATEGORIES:  # every category changes, not just one
        assert [x for x in a if x["category"] == cat] != [x for x in c if x["category"] == cat]


def test_independent_of_global_random_state():
    import random

    random.seed(1)
    a = [it.to_dict() for it in generate_items("test", 5, seed=3)]
    random.seed(2)
    random.random()
    b = [it.to_dict() for it in generate_items("test", 5, seed=3)]
    assert a == b


def test_qaitem_round_trip(small):
    for it in small["test"]:
        assert QAItem.from_dict(it.to_dict()) == it


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**31), n=st.integers(min_value=1, max_value=6))
def test_any_seed_keeps_the_split_rules(seed, n):
    tr, va, te = (generate_items(s, n, seed=seed) for s in SPLITS)
    key = lambda it: (it.query_text, it.query_style, it.answer_text)  # noqa: E731
    assert not {key(i) for i in tr} & {key(i) for i in va}
    assert not {i.template_id for i in te} & {i.template_id for i in tr + va}
    assert not {i.value_id for i in te} & {i.value_id for i in tr + va}
    for it in tr + va + te:
        assert contains_key(it.answer_text, it.answer_key)
    assert [i.to_dict() for i in generate_items("val", n, seed=seed)] == [i.to_dict() for i in va]


# ----------------------------------------------------------------------------- preference pairs


def _check_pairs(items: list[QAItem], pairs: list[PreferencePair]) -> None:
    assert len(pairs) == len(items)
    assert len({p.id for p in pairs}) == len(pairs)
    for it, p in zip(items, pairs):
        assert p.item_id == it.id
        assert [(s.text, s.state) for s in p.chosen] == [(s.text, s.state) for s in it.answer_segments]
        assert [(s.text, s.state) for s in p.rejected] != [(s.text, s.state) for s in p.chosen]
        assert all(s.state in STATES for s in p.rejected)
        rej_text = " ".join(s.text for s in p.rejected)
        assert rej_text.isascii() and len(_norm(rej_text).split()) < 12
        if it.category in ("voice_control", "multi_state", "role_play"):
            assert p.kind == "wrong_state"
            assert [s.text for s in p.rejected] == [s.text for s in p.chosen]
            changed = [(c.state, r.state) for c, r in zip(p.chosen, p.rejected) if c.state != r.state]
            assert changed and all(OPPOSITE_STATE[c] == r for c, r in changed)
        else:
            assert p.kind == "wrong_answer"
            assert [s.state for s in p.rejected] == [s.state for s in p.chosen]
            assert not contains_key(rej_text, it.answer_key), (it.answer_key, rej_text)
            assert _norm(rej_text) != _norm(it.answer_text)


def test_preference_pairs_all_items(full):
    for split in SPLITS:
        items = _some(full, split)
        _check_pairs(items, preference_pairs(items, seed=SEED))


def test_preference_pairs_deterministic_and_plausible(small):
    items = small["train"]
    a, b = preference_pairs(items, seed=5), preference_pairs(items, seed=5)
    assert a == b
    for it, p in zip(items, a):
        rej = " ".join(s.text for s in p.rejected)
        fam = it.template_id.split(".")[1]
        if fam in ("add", "sub", "mul", "sequence"):  # off by a little
            assert abs(words_to_number(rej.split(" is ")[-1]) - words_to_number(it.answer_key)) <= 10
        if fam == "compare":  # the other number of the question
            assert words_to_number(rej.split(" is ")[0]) in numbers_in_text(it.query_text)
        if fam == "spelling":
            assert len(rej.split()) == len(it.answer_text.split())


def test_multi_state_rejections_vary():
    items = generate_items("train", 60, seed=0, categories=("multi_state",))
    flips = Counter(tuple(c.state != r.state for c, r in zip(p.chosen, p.rejected))
                    for p in preference_pairs(items, seed=0))
    assert set(flips) == {(True, False), (False, True), (True, True)}


def test_hand_made_items_get_pairs():
    num = QAItem("x-1", "imported", "train", "What is one plus one?", [AnswerSegment("Two.")], "two", "")
    loud = QAItem("x-2", "voice_control", "train", "Say hi loudly.", [AnswerSegment("Hi.", "loud")], "hi", "")
    p1, p2 = preference_pairs([num, loud], seed=0)
    assert p1.kind == "wrong_answer" and not contains_key(p1.rejected[0].text, "two")
    assert p2.kind == "wrong_state" and p2.rejected[0].state == "soft"


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (7, "seven"), (12, "twelve"), (20, "twenty"), (21, "twenty one"), (40, "forty"),
    (99, "ninety nine"), (100, "one hundred"), (105, "one hundred five"), (999, "nine hundred ninety nine"),
    (1000, "one thousand"), (-3, "minus three"),
])
def test_number_to_words(n, words):
    assert number_to_words(n) == words
    assert words_to_number(words) == n


def test_number_to_words_rejects_non_ints():
    with pytest.raises(TypeError):
        number_to_words(2.5)
    with pytest.raises(TypeError):
        number_to_words(True)


@given(st.integers(min_value=-999_999, max_value=999_999))
def test_number_words_round_trip(n):
    w = number_to_words(n)
    assert w.isascii() and w == _norm(w)
    assert words_to_number(w) == n


@given(st.lists(st.integers(min_value=0, max_value=999), min_size=1, max_size=5))
def test_numbers_in_text_finds_each_number(ns):
    text = "Count " + ", ".join(number_to_words(n) for n in ns) + ". What comes next?"
    assert numbers_in_text(text) == ns


def test_words_to_number_accepts_and():
    assert words_to_number("one hundred and five") == 105
    with pytest.raises(ValueError):
        words_to_number("seven apples")
