"""Text side of the synthetic spoken-QA corpus (DESIGN.md section 4).

Six categories after StepEval-Audio-360, each scorable without a human: every item has
an ``answer_key``, a short lowercase string (numbers as words) that a correct answer's
transcript contains as a whole-word sequence (see :func:`contains_key`).

Splits
------
* Phrasings: every category (in fact every sub-kind of question) has train templates
  and test templates; the two sets are disjoint. ``val`` uses the train templates.
* Values: each value family (arithmetic operand pairs and sequences, countries, coloured
  objects, animals, opposite pairs, spelling words, phrases to say, phrase pairs) is
  partitioned once, by a stable SHA-256 rank (never Python's salted ``hash()``), into a
  train pool (75 %) and a test pool (25 %). Arithmetic is partitioned by the unordered
  operand pair, so ``3 + 4``, ``4 + 3``, ``7 - 4`` ... and "which is bigger, three or
  four" all land in the same pool; opposites by the unordered pair, so both directions
  do. Role-play questions reuse the reasoning and knowledge partitions, and
  voice-understanding carrier phrases the voice-control one, so no test value is seen in
  any train category.
* ``val`` items come from the train pools and train templates, but are distinct items:
  every candidate (template + value + states) is assigned to train or val by a stable
  hash, independent of the seed, so train and val never share an item.

Within a split, items are drawn with ``random.Random`` seeded from ``(seed, split,
category)``, spread evenly over the category's sub-kinds (e.g. add / subtract /
multiply / compare / sequence). Asking for more items than a pool holds raises
``ValueError`` naming the category and the maximum (see :func:`pool_sizes`).

Voice understanding: the item's ``query_style`` is the prosody the query must be spoken
with, and the answer is about that prosody. The "yes, you are whispering" key is
``"you are whispering"`` (not ``"whispering"``, which the wrong answer "no, you are not
whispering" also contains).
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

CATEGORIES = ("reasoning", "knowledge", "voice_control", "multi_state", "role_play", "voice_understanding")
SPLITS = ("train", "val", "test")
STATES = ("neutral", "slow", "fast", "loud", "soft", "high", "low", "whisper", "happy", "sad", "robot", "child")
QUERY_STYLES = ("fast", "slow", "high", "low", "whisper")

# The clearly opposite voice state, used for "wrong_state" preference pairs.
OPPOSITE_STATE = {
    "slow": "fast", "fast": "slow", "loud": "soft", "soft": "loud", "high": "low", "low": "high",
    "happy": "sad", "sad": "happy", "whisper": "loud", "robot": "child", "child": "robot",
    "neutral": "whisper",
}
WRONG_STATE_CATEGORIES = ("voice_control", "multi_state", "role_play")

MAX_QUERY_WORDS = 14  # queries < 15 words
MAX_ANSWER_WORDS = 11  # answers < 12 words
TEST_FRACTION = 0.25  # share of each value family held out for test
VAL_FRACTION = 0.20  # share of train-pool candidates that belong to val


# --------------------------------------------------------------------------- data types


@dataclass
class AnswerSegment:
    text: str
    state: str = "neutral"  # one of STATES: the assistant's voice state for this part


@dataclass
class QAItem:
    id: str  # stable, unique across splits, e.g. "reasoning-train-0007"
    category: str
    split: str
    query_text: str  # what the user says
    answer_segments: list[AnswerSegment]  # one segment, except multi_state (two)
    answer_key: str  # lowercase words that a correct answer's transcript contains
    template_id: str  # "<category>.<family>.<n>": which phrasing produced the query
    query_style: str | None = None  # voice_understanding only: prosody of the query
    value_id: str = ""  # the underlying value, e.g. "pair:3,4", "capital:france" (split-partitioned)

    @property
    def answer_text(self) -> str:
        return " ".join(s.text for s in self.answer_segments)

    @property
    def family(self) -> str:
        """The question family from ``template_id`` (e.g. "add", "capital"), or ""."""
        parts = self.template_id.split(".")
        return parts[1] if len(parts) == 3 else ""

    def to_dict(self) -> dict:
        return {
            "id": self.id, "category": self.category, "split": self.split, "query_text": self.query_text,
            "answer_segments": [{"text": s.text, "state": s.state} for s in self.answer_segments],
            "answer_key": self.answer_key, "template_id": self.template_id,
            "query_style": self.query_style, "value_id": self.value_id,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "QAItem":
        return cls(
            id=d["id"], category=d["category"], split=d["split"], query_text=d["query_text"],
            answer_segments=[AnswerSegment(s["text"], s.get("state", "neutral")) for s in d["answer_segments"]],
            answer_key=d["answer_key"], template_id=d.get("template_id", ""),
            query_style=d.get("query_style"), value_id=d.get("value_id", ""),
        )


@dataclass
class PreferencePair:
    id: str
    item_id: str
    kind: str  # "wrong_answer" (right state, wrong key) or "wrong_state" (right text, wrong state)
    chosen: list[AnswerSegment]
    rejected: list[AnswerSegment]

    def to_dict(self) -> dict:
        return {
            "id": self.id, "item_id": self.item_id, "kind": self.kind,
            "chosen": [{"text": s.text, "state": s.state} for s in self.chosen],
            "rejected": [{"text": s.text, "state": s.state} for s in self.rejected],
        }


# --------------------------------------------------------------------------- numbers and text

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ONE_VAL = {w: i for i, w in enumerate(_ONES)}
_TEN_VAL = {w: 10 * i for i, w in enumerate(_TENS) if w}


def number_to_words(n: int) -> str:
    """Spoken English for an integer, as a TTS engine and an ASR judge spell it.

    ``21 -> "twenty one"``, ``105 -> "one hundred five"``, ``-3 -> "minus three"``.
    Supports |n| < 1,000,000.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"number_to_words needs an int, got {n!r}")
    if n < 0:
        return "minus " + number_to_words(-n)
    if n >= 1_000_000:
        raise ValueError(f"number_to_words supports |n| < 1000000, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        t, u = divmod(n, 10)
        return _TENS[t] + (" " + _ONES[u] if u else "")
    if n < 1000:
        h, r = divmod(n, 100)
        return _ONES[h] + " hundred" + (" " + number_to_words(r) if r else "")
    th, r = divmod(n, 1000)
    return number_to_words(th) + " thousand" + (" " + number_to_words(r) if r else "")


def _parse_below_thousand(tok: Sequence[str], i: int) -> tuple[int, int] | None:
    n = len(tok)
    value: int | None = None
    j = i
    if j + 1 < n and tok[j] in _ONE_VAL and 0 < _ONE_VAL[tok[j]] < 10 and tok[j + 1] == "hundred":
        value = 100 * _ONE_VAL[tok[j]]
        j += 2
        if j + 1 < n and tok[j] == "and" and (tok[j + 1] in _TEN_VAL or _ONE_VAL.get(tok[j + 1], 0) > 0):
            j += 1
    if j < n and tok[j] in _TEN_VAL:
        value = (value or 0) + _TEN_VAL[tok[j]]
        j += 1
        if j < n and 0 < _ONE_VAL.get(tok[j], 0) < 10:
            value += _ONE_VAL[tok[j]]
            j += 1
    elif j < n and tok[j] in _ONE_VAL and (value is None or _ONE_VAL[tok[j]] > 0):
        value = (value or 0) + _ONE_VAL[tok[j]]
        j += 1
    return None if value is None else (value, j)


def _parse_number(tok: Sequence[str], i: int) -> tuple[int, int] | None:
    first = _parse_below_thousand(tok, i)
    if first is None:
        return None
    value, j = first
    if j < len(tok) and tok[j] == "thousand" and value > 0:
        value *= 1000
        j += 1
        rest = _parse_below_thousand(tok, j)
        if rest is not None and rest[0] > 0:
            value += rest[0]
            j = rest[1]
    return value, j


def words_to_number(text: str) -> int:
    """Inverse of :func:`number_to_words` (also accepts "one hundred and five")."""
    tok = normalize_text(text).split()
    neg = bool(tok) and tok[0] == "minus"
    if neg:
        tok = tok[1:]
    got = _parse_number(tok, 0)
    if got is None or got[1] != len(tok):
        raise ValueError(f"not a number in words: {text!r}")
    return -got[0] if neg else got[0]


def numbers_in_text(text: str) -> list[int]:
    """Every number spelled in words in ``text``, in order ("two, four, six" -> [2, 4, 6])."""
    tok = re.findall(r"[a-z]+|[^a-z\s]", text.lower())  # punctuation tokens break numbers
    out, i = [], 0
    while i < len(tok):
        got = _parse_number(tok, i)
        if got is None:
            i += 1
        else:
            out.append(got[0])
            i = got[1]
    return out


def normalize_text(text: str) -> str:
    """Lowercase, every non-alphanumeric run to one space, stripped."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def contains_key(text: str, key: str) -> bool:
    """Whether ``key`` occurs in ``text`` as a whole-word sequence, after normalisation."""
    k = normalize_text(key)
    return bool(k) and f" {k} " in f" {normalize_text(text)} "


def _stable_int(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode("utf-8")).digest()[:8], "big")


def _partition(values: Iterable[str], salt: str) -> tuple[frozenset[str], frozenset[str]]:
    """(train pool, test pool): the TEST_FRACTION of values with the lowest stable rank."""
    vals = sorted(set(values), key=lambda v: (_stable_int(f"{salt}|{v}"), v))
    n_test = max(1, round(TEST_FRACTION * len(vals)))
    return frozenset(vals[n_test:]), frozenset(vals[:n_test])


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


_WORD_RE = re.compile(r"[A-Za-z0-9]+")


def _words(s: str) -> int:
    """Word count, as ``len(normalize_text(s).split())``."""
    return len(_WORD_RE.findall(s))


# --------------------------------------------------------------------------- value tables

CAPITALS = (  # (country as spoken in a sentence, capital); capital never contains the country
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"),
    ("Australia", "Canberra"), ("Brazil", "Brasilia"), ("Argentina", "Buenos Aires"), ("Peru", "Lima"),
    ("Chile", "Santiago"), ("Colombia", "Bogota"), ("Venezuela", "Caracas"), ("Cuba", "Havana"),
    ("Greece", "Athens"), ("Turkey", "Ankara"), ("Ireland", "Dublin"), ("the United Kingdom", "London"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Hungary", "Budapest"), ("the Czech Republic", "Prague"),
    ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"), ("Switzerland", "Bern"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("South Korea", "Seoul"), ("Indonesia", "Jakarta"), ("the Philippines", "Manila"),
    ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Saudi Arabia", "Riyadh"), ("Nigeria", "Abuja"),
    ("Ghana", "Accra"), ("Ethiopia", "Addis Ababa"), ("Morocco", "Rabat"), ("Senegal", "Dakar"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"), ("Croatia", "Zagreb"),
    ("Iceland", "Reykjavik"), ("Nepal", "Kathmandu"), ("Pakistan", "Islamabad"), ("Bangladesh", "Dhaka"),
    ("Afghanistan", "Kabul"), ("New Zealand", "Wellington"), ("Jamaica", "Kingston"), ("Ecuador", "Quito"),
    ("Uruguay", "Montevideo"), ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Jordan", "Amman"),
    ("Qatar", "Doha"), ("Malaysia", "Kuala Lumpur"), ("Uganda", "Kampala"), ("Zimbabwe", "Harare"),
    ("Zambia", "Lusaka"), ("Estonia", "Tallinn"), ("Latvia", "Riga"), ("Lithuania", "Vilnius"),
    ("Slovakia", "Bratislava"), ("Libya", "Tripoli"), ("Algeria", "Algiers"), ("Sudan", "Khartoum"),
    ("Somalia", "Mogadishu"), ("Angola", "Luanda"), ("the United States", "Washington"),
)

COLORS = (  # (thing as a sentence subject, its color)
    ("a banana", "yellow"), ("a lemon", "yellow"), ("the sun", "yellow"), ("a canary", "yellow"),
    ("corn", "yellow"), ("a school bus", "yellow"),
    ("a strawberry", "red"), ("a tomato", "red"), ("a cherry", "red"), ("a fire truck", "red"),
    ("a ruby", "red"), ("a ladybug", "red"),
    ("grass", "green"), ("a frog", "green"), ("a lime", "green"), ("a cucumber", "green"),
    ("broccoli", "green"), ("an emerald", "green"), ("a pea", "green"), ("spinach", "green"),
    ("the sky", "blue"), ("a blueberry", "blue"), ("a sapphire", "blue"), ("a bluebird", "blue"),
    ("snow", "white"), ("milk", "white"), ("a swan", "white"), ("sugar", "white"), ("a polar bear", "white"),
    ("coal", "black"), ("a crow", "black"), ("a raven", "black"), ("ink", "black"),
    ("a carrot", "orange"), ("a pumpkin", "orange"), ("a tangerine", "orange"), ("a goldfish", "orange"),
    ("a flamingo", "pink"), ("bubble gum", "pink"), ("cotton candy", "pink"),
    ("chocolate", "brown"), ("coffee", "brown"), ("mud", "brown"), ("a coconut", "brown"),
    ("an elephant", "gray"), ("a rhino", "gray"), ("a koala", "gray"), ("ash", "gray"),
    ("an eggplant", "purple"), ("a plum", "purple"), ("lavender", "purple"), ("an amethyst", "purple"),
)
COLOR_WORDS = tuple(sorted({c for _, c in COLORS}))

ANIMAL_SOUNDS = (  # (animal as a sentence subject, its sound); every sound is unique
    ("a cow", "moo"), ("a dog", "woof"), ("a cat", "meow"), ("a sheep", "baa"), ("a duck", "quack"),
    ("a pig", "oink"), ("a horse", "neigh"), ("a lion", "roar"), ("an owl", "hoot"), ("a snake", "hiss"),
    ("a bee", "buzz"), ("a mouse", "squeak"), ("a frog", "croak"), ("a rooster", "cock a doodle doo"),
    ("a wolf", "howl"), ("a donkey", "hee haw"), ("a crow", "caw"), ("a chick", "cheep"),
    ("a goose", "honk"), ("a dove", "coo"), ("a turkey", "gobble"), ("a songbird", "tweet"),
    ("a cricket", "chirp"), ("a bear", "growl"), ("a goat", "maa"),
)

OPPOSITES = (  # unordered pairs; every word in exactly one pair, so each direction is unambiguous
    ("hot", "cold"), ("up", "down"), ("day", "night"), ("black", "white"), ("left", "right"),
    ("happy", "sad"), ("fast", "slow"), ("early", "late"), ("wet", "dry"), ("full", "empty"),
    ("hard", "soft"), ("long", "short"), ("rich", "poor"), ("strong", "weak"), ("thick", "thin"),
    ("heavy", "light"), ("win", "lose"), ("push", "pull"), ("buy", "sell"), ("give", "take"),
    ("come", "go"), ("open", "closed"), ("true", "false"), ("above", "below"), ("inside", "outside"),
    ("first", "last"), ("friend", "enemy"), ("love", "hate"), ("laugh", "cry"), ("start", "finish"),
    ("question", "answer"), ("sweet", "sour"), ("clean", "dirty"), ("loud", "quiet"), ("young", "old"),
    ("safe", "dangerous"), ("cheap", "expensive"), ("easy", "difficult"), ("north", "south"),
    ("east", "west"), ("summer", "winter"), ("boy", "girl"), ("king", "queen"), ("always", "never"),
    ("asleep", "awake"), ("before", "after"), ("near", "far"), ("high", "low"), ("wide", "narrow"),
    ("smooth", "rough"), ("alive", "dead"), ("entrance", "exit"), ("remember", "forget"),
    ("arrive", "leave"), ("more", "less"), ("top", "bottom"), ("front", "back"), ("tight", "loose"),
    ("polite", "rude"), ("deep", "shallow"), ("good", "bad"), ("big", "small"), ("floor", "ceiling"),
)

SPELL_WORDS = (
    "cat", "dog", "sun", "hat", "pen", "cup", "bed", "box", "fox", "map", "bus", "car", "egg", "fish",
    "frog", "bird", "milk", "cake", "book", "tree", "door", "ship", "star", "moon", "rain", "snow",
    "lamp", "desk", "ring", "shoe", "sock", "coat", "kite", "ball", "duck", "goat", "lion", "bear",
    "wolf", "apple", "house", "horse", "water", "bread", "chair", "table", "plant", "cloud", "train",
    "clock", "smile", "dream", "music", "river", "tiger", "zebra", "mouse", "queen", "king", "pizza",
    "lemon", "grape", "candy", "paper", "robot", "jelly", "green", "happy", "sunny", "pig", "cow",
    "hen", "owl", "bee", "ant", "jam", "toy", "key", "leaf", "nest", "rose", "bike", "boat", "road",
)

PHRASES = (  # things to say (voice control) and carrier phrases (voice understanding)
    "apple", "banana", "greetings", "good morning", "good afternoon", "good evening", "thank you",
    "see you soon", "welcome home", "happy birthday", "nice to meet you",
    "how are you", "good luck", "well done", "excuse me", "sorry about that", "not a problem", "of course",
    "let us start", "time for lunch", "blue sky", "green grass", "red balloon", "yellow bus", "purple flower",
    "silver spoon", "golden ring", "coffee", "tea", "water", "cheese", "chocolate", "pizza", "pasta",
    "rice", "soup", "salad", "sandwich", "carrot", "potato", "tomato", "cucumber", "strawberry",
    "blueberry", "pineapple", "watermelon", "lemon", "mango", "peach", "cherry", "grapes", "coconut",
    "cookie", "cake", "pancake", "honey", "garden", "window", "kitchen", "bedroom", "umbrella",
    "bicycle", "airplane", "train station", "computer", "telephone", "keyboard", "notebook", "pencil",
    "backpack", "library", "museum", "hospital", "river", "mountain", "ocean", "forest", "desert",
    "island", "rainbow", "snowflake", "sunshine", "moonlight", "butterfly", "dragon", "penguin",
    "giraffe", "kangaroo", "dolphin", "tiger", "zebra", "rabbit", "turtle", "squirrel", "octopus",
    "elephant", "monkey", "music", "guitar", "piano", "violin", "trumpet", "dance", "adventure",
    "birthday party", "holiday", "weekend", "tomorrow", "yesterday", "good job", "let us begin",
    "all done", "wonderful", "beautiful", "amazing", "fantastic", "delicious", "interesting",
    "excellent", "perfect", "lovely day", "magic carpet", "paper boat", "treasure map", "secret door",
    "winter coat", "summer rain", "autumn leaves", "spring flowers", "pumpkin pie", "fresh bread",
    "warm blanket", "little star", "big city", "dinner is ready", "what a surprise",
)

PHRASE_PAIRS = (  # multi-state: two short phrases said in two voice states (none is in PHRASES)
    ("hello", "goodbye"), ("yes", "no"), ("stop", "keep moving"), ("turn left", "turn right"), ("open up", "shut it"),
    ("sunny", "rainy"), ("hurray", "alas"), ("we won", "we lost"), ("good news", "bad news"),
    ("cheers", "farewell"), ("hi there", "bye now"), ("come in", "go away"), ("sit down", "stand up"),
    ("wake up", "go to bed"), ("I am home", "I am leaving"), ("it is fun", "it is boring"),
    ("yummy", "yucky"), ("all set", "not yet"), ("found it", "lost it"), ("yay", "oh dear"),
    ("guess what", "never mind"), ("party time", "bed time"), ("sunrise", "sunset"), ("sweet", "bitter"),
    ("happy days", "hard times"), ("bright morning", "dark night"), ("springtime", "harvest"),
    ("laughter", "tears"), ("heads", "tails"), ("north pole", "south pole"), ("full moon", "new moon"),
    ("kitten", "puppy"), ("sugar", "spice"), ("thunder", "lightning"), ("ice cream", "hot cocoa"),
    ("the end", "the beginning"), ("ping", "pong"), ("tick", "tock"), ("zig", "zag"),
    ("marco", "polo"), ("ding", "dong"), ("rock", "scissors"), ("fire", "frost"),
    ("red light", "green light"), ("cat", "mouse"), ("espresso", "lemonade"), ("bronze", "gold"),
    ("a question", "an answer"), ("peanut butter", "jelly"), ("salt", "pepper"), ("dawn", "dusk"),
    ("hooray", "what a pity"), ("I did it", "I give up"), ("good day", "bad day"), ("summer fun", "winter cold"),
    ("toast", "marmalade"), ("smile", "frown"), ("please", "thanks"),
)

# --------------------------------------------------------------------------- templates
# (family -> (train templates, test templates)); ids are "<category>.<family>.<index>",
# train first. Placeholders: {a} {b} {x} {y} numbers, {s} a sequence, {c} country,
# {o} thing, {n} animal, {w} word, {p} phrase ({P} capitalised), {adv} a voice adverb,
# {r} persona, {q} an inner question ({Q} capitalised).

_T = {
    "reasoning": {
        "add": (("What is {a} plus {b}?", "What do you get when you add {a} and {b}?",
                 "Add {a} and {b}.", "Can you tell me {a} plus {b}?"),
                ("If I have {a} apples and get {b} more, how many do I have?",
                 "What is the sum of {a} and {b}?")),
        "sub": (("What is {a} minus {b}?", "Take {b} away from {a}.",
                 "What do you get when you subtract {b} from {a}?", "Can you tell me {a} minus {b}?"),
                ("If I have {a} coins and lose {b}, how many are left?", "How much is {a} take away {b}?")),
        "mul": (("What is {a} times {b}?", "Multiply {a} by {b}.",
                 "What do you get when you multiply {a} and {b}?", "Can you tell me {a} times {b}?"),
                ("What is the product of {a} and {b}?", "How much is {a} multiplied by {b}?")),
        "compare": (("Which is bigger, {x} or {y}?", "Which number is larger, {x} or {y}?",
                     "Which is smaller, {x} or {y}?", "Which number is less, {x} or {y}?"),
                    ("Out of {x} and {y}, which is greater?", "Out of {x} and {y}, which is the smaller number?")),
        "sequence": (("What comes after {s}?", "What number comes next: {s}?", "Continue the pattern: {s}.",
                      "What is the next number after {s}?"),
                     ("Count on from {s}. What comes next?", "Here is a sequence: {s}. What follows?")),
    },
    "knowledge": {
        "capital": (("What is the capital of {c}?", "Which city is the capital of {c}?",
                     "Name the capital of {c}.", "Do you know the capital of {c}?"),
                    ("Tell me the capital city of {c}.", "In which city is the government of {c}?")),
        "color": (("What color is {o}?", "What is the color of {o}?", "Tell me the color of {o}.",
                   "Which color is {o}?"),
                  ("If you look at {o}, what color do you see?", "Describe the color of {o}.")),
        "sound": (("What sound does {n} make?", "What does {n} say?", "What noise does {n} make?",
                   "Tell me the sound {n} makes."),
                  ("If you hear {n}, what does it sound like?", "Which sound comes from {n}?")),
        "opposite": (("What is the opposite of {w}?", "Tell me the opposite of {w}.",
                      "What word means the opposite of {w}?", "Give me the opposite of {w}."),
                     ("Which word is opposite to {w}?", "Name a word that means the reverse of {w}.")),
        "spelling": (("How do you spell {w}?", "Spell the word {w}.", "Can you spell {w}?", "Please spell {w}."),
                     ("What letters make up the word {w}?", "Letter by letter, how is {w} written?")),
    },
    "voice_control": {
        "say": (("Say {p} {adv}.", "Please say {p} {adv}.", "Can you say {p} {adv}?", "Repeat {p} {adv}."),
                ("Let me hear you say {p} {adv}.", "I would like you to say {p} {adv}.",
                 "Speak these words {adv}: {p}.")),
    },
    "multi_state": {
        "two_states": (("Say {p1} {adv1}, then {p2} {adv2}.", "First say {p1} {adv1}, then say {p2} {adv2}.",
                        "Say {p1} {adv1} and then {p2} {adv2}.", "Please say {p1} {adv1}, then {p2} {adv2}."),
                       ("Begin with {p1} {adv1}, and end with {p2} {adv2}.",
                        "Let me hear {p1} {adv1}, followed by {p2} {adv2}.")),
    },
    "role_play": {
        "persona": (("Answer as {r}: {q}", "Pretend you are {r}. {Q}", "Speak like {r}. {Q}",
                     "In the voice of {r}, {q}"),
                    ("Be {r} and tell me, {q}", "Talk the way {r} would. {Q}", "Play {r} for me: {q}")),
    },
    "voice_understanding": {
        "rate": (("{P}. Is my voice fast or slow?", "{P}. Am I talking fast or slow?",
                  "Listen: {p}. Am I speaking quickly or slowly?"),
                 ("{P}. Would you say I speak fast or slow?", "Here I go: {p}. Fast or slow?")),
        "pitch": (("{P}. Is my voice high or low?", "{P}. Am I speaking high or low?",
                   "Listen: {p}. Is my pitch high or low?"),
                  ("{P}. Would you say my voice is high or low?", "Here I go: {p}. High or low?")),
        "whisper": (("{P}. Am I whispering?", "{P}. Is this a whisper?", "Listen: {p}. Am I whispering right now?"),
                    ("{P}. Do you think I am whispering?", "Here I go: {p}. Is that a whisper?")),
    },
}

TEMPLATES: dict[str, str] = {}
_TEMPLATE_SPLIT: dict[str, str] = {}  # template id -> "train" (also val) or "test"
for _cat, _fams in _T.items():
    for _fam, (_tr, _te) in _fams.items():
        for _i, _txt in enumerate(_tr + _te):
            _tid = f"{_cat}.{_fam}.{_i}"
            TEMPLATES[_tid] = _txt
            _TEMPLATE_SPLIT[_tid] = "train" if _i < len(_tr) else "test"


def template_ids(category: str, split: str) -> tuple[str, ...]:
    """The template ids a split of a category uses (val uses the train templates)."""
    group = "test" if split == "test" else "train"
    return tuple(t for t in TEMPLATES if t.startswith(category + ".") and _TEMPLATE_SPLIT[t] == group)


def _templates(category: str, family: str, group: str) -> list[tuple[str, str]]:
    return [(t, TEMPLATES[t]) for t in TEMPLATES
            if t.startswith(f"{category}.{family}.") and _TEMPLATE_SPLIT[t] == group]


COMPARE_DIRECTION = {  # compare template -> which number the answer names
    "reasoning.compare.0": "bigger", "reasoning.compare.1": "bigger", "reasoning.compare.2": "smaller",
    "reasoning.compare.3": "smaller", "reasoning.compare.4": "bigger", "reasoning.compare.5": "smaller",
}
CONTROL_ADVERBS = {"slow": "slowly", "fast": "quickly", "loud": "loudly", "soft": "softly",
                   "high": "in a high voice", "low": "in a low voice", "whisper": "in a whisper"}
MULTI_ADVERBS = {"happy": "happily", "sad": "sadly", "slow": "slowly", "fast": "quickly", "loud": "loudly",
                 "soft": "softly", "high": "in a high voice", "low": "in a low voice"}
PERSONAS = {"robot": "a robot", "child": "a child"}

# --------------------------------------------------------------------------- value pools


def _pair_id(a: int, b: int) -> str:
    lo, hi = sorted((a, b))
    return f"pair:{lo},{hi}"


def _num_contains(a: int, b: int) -> bool:
    """Whether one number's words hold the other's (e.g. twenty / twenty one)."""
    wa, wb = number_to_words(a), number_to_words(b)
    return contains_key(wa, wb) or contains_key(wb, wa)


@functools.lru_cache(maxsize=None)
def _reasoning_values() -> dict[str, list[tuple]]:
    """Every arithmetic / comparison / sequence problem, by family."""
    add = [(a, b) for a in range(1, 21) for b in range(1, 21)]
    sub = [(a, b) for a in range(2, 21) for b in range(1, a)]
    mul = [(a, b) for a in range(2, 11) for b in range(2, 11)]
    cmp_ = [(x, y) for x in range(1, 51) for y in range(1, 51) if x != y and not _num_contains(x, y)]
    seq = []
    for start in range(0, 21):
        for step in range(1, 6):
            terms = [start + k * step for k in range(4)]
            seq.append(tuple(terms))
            down = terms[::-1]
            seq.append(tuple(down))
    return {"add": add, "sub": sub, "mul": mul, "compare": cmp_, "sequence": sorted(set(seq))}


def _reasoning_value_id(family: str, v: tuple) -> str:
    if family == "sequence":
        return "seq:" + ",".join(str(t) for t in sorted(v[:3]))
    return _pair_id(v[0], v[1])


@functools.lru_cache(maxsize=None)
def _value_pools() -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """(train pool, test pool) per value family, by value id."""
    rv = _reasoning_values()
    reasoning_ids = {_reasoning_value_id(f, v) for f, vs in rv.items() for v in vs}
    return {
        "reasoning": _partition(reasoning_ids, "reasoning"),
        "capital": _partition((f"capital:{c.lower()}" for c, _ in CAPITALS), "capital"),
        "color": _partition((f"color:{o}" for o, _ in COLORS), "color"),
        "sound": _partition((f"sound:{a}" for a, _ in ANIMAL_SOUNDS), "sound"),
        "opposite": _partition((f"opposite:{a},{b}" for a, b in OPPOSITES), "opposite"),
        "spelling": _partition((f"spell:{w}" for w in SPELL_WORDS), "spelling"),
        "phrase": _partition((f"phrase:{p}" for p in PHRASES), "phrase"),
        "phrase_pair": _partition((f"phrases:{a}|{b}" for a, b in PHRASE_PAIRS), "phrase_pair"),
    }


def _in_pool(pool: str, value_id: str, group: str) -> bool:
    train, test = _value_pools()[pool]
    return value_id in (test if group == "test" else train)


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class _Cand:
    sub: str  # allocation sub-kind within the category
    template_id: str
    query_text: str
    segments: tuple[tuple[str, str], ...]  # (text, state)
    answer_key: str
    value_id: str
    query_style: str | None = None


def _fmt(template: str, **kw) -> str:
    if "q" in kw:
        kw["Q"] = _cap(kw["q"])
    if "p" in kw:
        kw["P"] = _cap(kw["p"])
    return _cap(template.format(**kw))


def _reasoning_answer(family: str, v: tuple, direction: str = "") -> tuple[str, str]:
    """(answer text, key) for a reasoning problem."""
    if family == "compare":
        n = max(v) if direction == "bigger" else min(v)
        w = number_to_words(n)
        return f"{_cap(w)} is {direction}.", w
    if family == "sequence":
        w = number_to_words(v[3])
        return f"The next number is {w}.", w
    n = {"add": v[0] + v[1], "sub": v[0] - v[1], "mul": v[0] * v[1]}[family]
    w = number_to_words(n)
    return f"The answer is {w}.", w


def _reasoning_cands(group: str) -> list[_Cand]:
    out = []
    for family, values in _reasoning_values().items():
        tmpls = _templates("reasoning", family, group)
        for v in values:
            vid = _reasoning_value_id(family, v)
            if not _in_pool("reasoning", vid, group):
                continue
            for tid, t in tmpls:
                if family == "sequence":
                    q = _fmt(t, s=", ".join(number_to_words(x) for x in v[:3]))
                    text, key = _reasoning_answer(family, v)
                elif family == "compare":
                    q = _fmt(t, x=number_to_words(v[0]), y=number_to_words(v[1]))
                    text, key = _reasoning_answer(family, v, COMPARE_DIRECTION[tid])
                else:
                    q = _fmt(t, a=number_to_words(v[0]), b=number_to_words(v[1]))
                    text, key = _reasoning_answer(family, v)
                out.append(_Cand(family, tid, q, ((text, "neutral"),), key, vid))
    return out


def _knowledge_facts() -> list[tuple[str, str, dict, str, str]]:
    """(family, value id, template kwargs, answer text, key) for every fact."""
    facts = []
    for c, cap in CAPITALS:
        facts.append(("capital", f"capital:{c.lower()}", {"c": c}, f"The capital of {c} is {cap}.", cap.lower()))
    for o, col in COLORS:
        facts.append(("color", f"color:{o}", {"o": o}, f"{_cap(o)} is {col}.", col))
    for a, s in ANIMAL_SOUNDS:
        facts.append(("sound", f"sound:{a}", {"n": a}, f"{_cap(a)} says {s}.", s))
    for a, b in OPPOSITES:
        for w, o in ((a, b), (b, a)):
            facts.append(("opposite", f"opposite:{a},{b}", {"w": w}, f"The opposite of {w} is {o}.", o))
    for w in SPELL_WORDS:
        letters = " ".join(w)
        facts.append(("spelling", f"spell:{w}", {"w": w}, f"{_cap(w)} is spelled {letters}.", letters))
    return facts


_FACT_POOL = {"capital": "capital", "color": "color", "sound": "sound", "opposite": "opposite",
              "spelling": "spelling"}


def _knowledge_cands(group: str) -> list[_Cand]:
    out = []
    for family, vid, kw, text, key in _knowledge_facts():
        if not _in_pool(_FACT_POOL[family], vid, group):
            continue
        for tid, t in _templates("knowledge", family, group):
            out.append(_Cand(family, tid, _fmt(t, **kw), ((text, "neutral"),), key, vid))
    return out


def _say_text(phrase: str) -> str:
    return _cap(phrase) + "."


def _voice_control_cands(group: str) -> list[_Cand]:
    out = []
    tmpls = _templates("voice_control", "say", group)
    for p in PHRASES:
        vid = f"phrase:{p}"
        if not _in_pool("phrase", vid, group):
            continue
        for state, adv in CONTROL_ADVERBS.items():
            for tid, t in tmpls:
                out.append(_Cand(state, tid, _fmt(t, p=p, adv=adv), ((_say_text(p), state),), p.lower(), vid))
    return out


def _multi_state_cands(group: str) -> list[_Cand]:
    out = []
    tmpls = _templates("multi_state", "two_states", group)
    for a, b in PHRASE_PAIRS:
        vid = f"phrases:{a}|{b}"
        if not _in_pool("phrase_pair", vid, group):
            continue
        for p1, p2 in ((a, b), (b, a)):
            for s1, adv1 in MULTI_ADVERBS.items():
                for s2, adv2 in MULTI_ADVERBS.items():
                    if s1 == s2:
                        continue
                    for tid, t in tmpls:
                        q = _fmt(t, p1=p1, p2=p2, adv1=adv1, adv2=adv2)
                        segs = ((_say_text(p1), s1), (_say_text(p2), s2))
                        out.append(_Cand(f"{s1}>{s2}", tid, q, segs, f"{p1} {p2}".lower(), vid))
    return out


def _role_play_questions(group: str) -> list[tuple[str, str, str, str, str]]:
    """(sub, inner question, answer text, key, value id) within the group's value pools."""
    qs = []
    rv = _reasoning_values()
    for family, word in (("add", "plus"), ("sub", "minus")):
        for v in rv[family]:
            if max(v) > 10:
                continue
            vid = _reasoning_value_id(family, v)
            if _in_pool("reasoning", vid, group):
                text, key = _reasoning_answer(family, v)
                q = f"what is {number_to_words(v[0])} {word} {number_to_words(v[1])}?"
                qs.append(("arithmetic", q, text, key, vid))
    inner = {"capital": "what is the capital of {c}?", "color": "what color is {o}?",
             "sound": "what sound does {n} make?", "opposite": "what is the opposite of {w}?"}
    for family, vid, kw, text, key in _knowledge_facts():
        if family in inner and _in_pool(_FACT_POOL[family], vid, group):
            qs.append(("fact", inner[family].format(**kw), text, key, vid))
    return qs


def _role_play_cands(group: str) -> list[_Cand]:
    out = []
    tmpls = _templates("role_play", "persona", group)
    for sub, q, text, key, vid in _role_play_questions(group):
        for state, persona in PERSONAS.items():
            for tid, t in tmpls:
                out.append(_Cand(sub, tid, _fmt(t, r=persona, q=q), ((text, state),), key, vid))
    return out


def _understanding_answer(family: str, style: str) -> tuple[str, str]:
    if family == "whisper":
        if style == "whisper":
            return "Yes, you are whispering.", "you are whispering"
        return "No, you are not whispering.", "not whispering"
    return f"Your voice is {style}.", style


_UNDERSTANDING_STYLES = {
    "rate": (("rate", ("fast", "slow")),),
    "pitch": (("pitch", ("high", "low")),),
    "whisper": (("whisper_yes", ("whisper",)), ("whisper_no", ("fast", "slow", "high", "low"))),
}


def _voice_understanding_cands(group: str) -> list[_Cand]:
    out = []
    for p in PHRASES:
        vid = f"phrase:{p}"
        if not _in_pool("phrase", vid, group):
            continue
        for family, subs in _UNDERSTANDING_STYLES.items():
            for tid, t in _templates("voice_understanding", family, group):
                q = _fmt(t, p=p)
                for sub, styles in subs:
                    for style in styles:
                        text, key = _understanding_answer(family, style)
                        out.append(_Cand(sub, tid, q, ((text, "neutral"),), key, vid, style))
    return out


_BUILDERS = {
    "reasoning": _reasoning_cands, "knowledge": _knowledge_cands, "voice_control": _voice_control_cands,
    "multi_state": _multi_state_cands, "role_play": _role_play_cands,
    "voice_understanding": _voice_understanding_cands,
}


def _is_val(c: _Cand) -> bool:
    ident = f"val|{c.template_id}|{c.query_text}|{c.query_style}|{c.segments}"
    return _stable_int(ident) % 10_000 < round(VAL_FRACTION * 10_000)


@functools.lru_cache(maxsize=None)
def _group(category: str, group: str) -> tuple[tuple[_Cand, bool], ...]:
    """Every valid, distinct candidate of a value group ("train" or "test"), with its val flag."""
    seen: set[tuple] = set()
    out = []
    for c in _BUILDERS[category](group):
        if _words(c.query_text) > MAX_QUERY_WORDS or _words(" ".join(t for t, _ in c.segments)) > MAX_ANSWER_WORDS:
            continue
        ident = (c.query_text, c.query_style, c.segments)
        if ident in seen:
            continue
        seen.add(ident)
        out.append((c, group == "train" and _is_val(c)))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _pool(category: str, split: str) -> tuple[tuple[str, tuple[_Cand, ...]], ...]:
    """The split's candidates for a category, grouped by sub-kind, in a fixed order."""
    by_sub: dict[str, list[_Cand]] = {}
    for c, is_val in _group(category, "test" if split == "test" else "train"):
        if split != "test" and is_val != (split == "val"):
            continue
        by_sub.setdefault(c.sub, []).append(c)
    return tuple((s, tuple(v)) for s, v in sorted(by_sub.items()))


def pool_sizes() -> dict[str, dict[str, int]]:
    """The largest ``per_category`` each category and split can give."""
    return {c: {s: sum(len(v) for _, v in _pool(c, s)) for s in SPLITS} for c in CATEGORIES}


def _allocate(n: int, sizes: dict[str, int], rng: random.Random) -> dict[str, int]:
    """Spread n items as evenly as possible over sub-kinds, capped by their sizes."""
    keys = sorted(sizes)
    rng.shuffle(keys)  # who gets the remainder is seeded, not alphabetical
    alloc = {k: 0 for k in keys}
    remaining = n
    open_ = [k for k in keys if sizes[k] > 0]
    while remaining > 0 and open_:
        share, extra = divmod(remaining, len(open_))
        for i, k in enumerate(open_):
            give = min(share + (1 if i < extra else 0), sizes[k] - alloc[k])
            alloc[k] += give
            remaining -= give
        open_ = [k for k in open_ if alloc[k] < sizes[k]]
    return alloc


# --------------------------------------------------------------------------- public API


def generate_items(split: str, per_category: int, seed: int, categories: Iterable[str] = CATEGORIES) -> list[QAItem]:
    """``per_category`` items of each category for one split, deterministic under ``seed``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if isinstance(per_category, bool) or not isinstance(per_category, int) or per_category < 0:
        raise ValueError(f"per_category must be a non-negative int, got {per_category!r}")
    categories = tuple(categories)
    for cat in categories:
        if cat not in CATEGORIES:
            raise ValueError(f"unknown category {cat!r}; expected one of {', '.join(CATEGORIES)}")
    if len(set(categories)) != len(categories):
        raise ValueError(f"categories repeat: {categories}")
    items: list[QAItem] = []
    for cat in categories:
        pool = dict(_pool(cat, split))
        total = sum(len(v) for v in pool.values())
        if per_category > total:
            raise ValueError(
                f"category {cat!r} has only {total} unique {split} items; per_category={per_category} "
                f"exceeds the maximum {total} for this split")
        rng = random.Random(f"aqaa-corpus|{seed}|{split}|{cat}")
        alloc = _allocate(per_category, {s: len(v) for s, v in pool.items()}, rng)
        chosen: list[_Cand] = []
        for sub in sorted(pool):
            chosen.extend(rng.sample(pool[sub], alloc[sub]))
        rng.shuffle(chosen)
        for i, c in enumerate(chosen):
            items.append(QAItem(
                id=f"{cat}-{split}-{i:04d}", category=cat, split=split, query_text=c.query_text,
                answer_segments=[AnswerSegment(t, s) for t, s in c.segments], answer_key=c.answer_key,
                template_id=c.template_id, query_style=c.query_style, value_id=c.value_id,
            ))
    return items


_KEY_DISPLAY = {"capital": [cap for _, cap in CAPITALS], "color": list(COLOR_WORDS),
                "sound": [s for _, s in ANIMAL_SOUNDS], "opposite": sorted({w for p in OPPOSITES for w in p})}


def _replace_key(text: str, key: str, new: str) -> str:
    pat = r"(?<![A-Za-z0-9])" + r"[^A-Za-z0-9]+".join(re.escape(w) for w in key.split()) + r"(?![A-Za-z0-9])"

    def sub(m: re.Match) -> str:
        return _cap(new) if m.group(0)[:1].isupper() else new

    return re.sub(pat, sub, text, flags=re.IGNORECASE)


def _wrong_keys(item: QAItem, rng: random.Random) -> Iterator[str]:
    """Plausible wrong answer keys for a wrong_answer pair, most plausible first."""
    fam, key = item.family, item.answer_key
    if fam == "compare" and item.value_id.startswith("pair:"):  # the other number asked about
        a, b = (int(x) for x in item.value_id[5:].split(","))
        yield number_to_words(b if words_to_number(key) == a else a)
    if fam == "spelling":  # one letter wrong
        letters = key.split()
        for _ in range(50):
            i = rng.randrange(len(letters))
            c = rng.choice("abcdefghijklmnopqrstuvwxyz".replace(letters[i], ""))
            yield " ".join(letters[:i] + [c] + letters[i + 1:])
        return
    if fam in _KEY_DISPLAY:  # another capital / color / sound / word
        avoid = {key}
        if fam == "opposite" and item.value_id.startswith("opposite:"):
            avoid |= set(item.value_id[len("opposite:"):].split(","))  # not the asked word either
        cands = [k for k in _KEY_DISPLAY[fam] if k.lower() not in avoid]
        rng.shuffle(cands)
        yield from cands
        return
    try:
        n = words_to_number(key)
    except ValueError:
        return
    first = [1, -1]  # off by one, then a little more
    rng.shuffle(first)
    for d in first + [2, -2, 3, -3, 10, -10]:
        if n + d >= 0:
            yield number_to_words(n + d)


def _wrong_answer(item: QAItem, rng: random.Random) -> list[AnswerSegment] | None:
    if item.category == "voice_understanding" and item.query_style:
        fam = item.family or ("whisper" if "whisper" in item.answer_key else "rate")
        if fam == "whisper":
            wrong_style = "fast" if item.query_style == "whisper" else "whisper"
        else:
            wrong_style = {"fast": "slow", "slow": "fast", "high": "low", "low": "high"}[item.query_style]
        text, _ = _understanding_answer(fam, wrong_style)
        return [AnswerSegment(text, item.answer_segments[0].state)]
    for wrong in _wrong_keys(item, rng):
        rejected = [AnswerSegment(_replace_key(s.text, item.answer_key, wrong), s.state)
                    for s in item.answer_segments]
        text = " ".join(s.text for s in rejected)
        if text != item.answer_text and not contains_key(text, item.answer_key):
            return rejected
    return None


def _wrong_state(item: QAItem, rng: random.Random) -> list[AnswerSegment]:
    segs = item.answer_segments
    flip = set(range(len(segs)))
    if len(segs) > 1:
        flip = rng.choice([{0}, {1}, {0, 1}]) if len(segs) == 2 else {rng.randrange(len(segs))}
    return [AnswerSegment(s.text, OPPOSITE_STATE.get(s.state, "neutral") if i in flip else s.state)
            for i, s in enumerate(segs)]


def preference_pairs(items: list[QAItem], seed: int) -> list[PreferencePair]:
    """One DPO pair per item (DESIGN.md section 4).

    ``wrong_state`` for voice_control / multi_state / role_play: rejected is the same text
    in the opposite voice state (multi_state: one or both segments flipped, seeded).
    ``wrong_answer`` for the rest: rejected is the same answer with a plausible wrong key
    (off-by-one number, the other compared number, another capital / color / sound /
    word, a misspelling, the opposite voice style), in the same voice state.
    """
    pairs = []
    for item in items:
        rng = random.Random(f"aqaa-pairs|{seed}|{item.id}")
        chosen = [AnswerSegment(s.text, s.state) for s in item.answer_segments]
        rejected = None
        kind = "wrong_state"
        if item.category not in WRONG_STATE_CATEGORIES:
            kind = "wrong_answer"
            rejected = _wrong_answer(item, rng)
            if rejected is None and any(s.state != "neutral" for s in item.answer_segments):
                kind = "wrong_state"
            elif rejected is None:
                raise ValueError(f"item {item.id!r}: cannot build a wrong answer for key {item.answer_key!r}")
        if rejected is None:
            rejected = _wrong_state(item, rng)
        pairs.append(PreferencePair(id=f"{item.id}-pair", item_id=item.id, kind=kind,
                                    chosen=chosen, rejected=rejected))
    return pairs


__all__ = [
    "CATEGORIES", "SPLITS", "STATES", "QUERY_STYLES", "OPPOSITE_STATE", "TEMPLATES", "AnswerSegment", "QAItem",
    "PreferencePair", "generate_items", "preference_pairs", "number_to_words", "words_to_number",
    "numbers_in_text", "normalize_text", "contains_key", "template_ids", "pool_sizes",
]
