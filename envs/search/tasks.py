"""Search tasks: a seeded fictional world, its corpus and multi-hop questions; public-format loaders.

The world has people, cities, companies, countries and universities with invented, pronounceable
names. Each entity has attributes (a birth year, a population, ...) and relations to other entities
(a person's employer, a city's mayor, ...), written as fixed sentences in one or two short
documents about it. Distractor documents mention entities and relation words without stating facts.

A question of ``h`` hops starts from one entity and follows ``h`` facts, each stated in a different
document: "What is the country of the birthplace of the founder of Zorvex Labs?" needs the founder
(from Zorvex Labs' leadership document), then their birthplace, then that city's country. Its gold
documents are those ``h`` documents.

Splits: every entity belongs to ``train`` or ``test`` (a seeded draw, ``test_fraction`` of them are
``test``); a task's split is the split of the entity its question starts from. Task ids are
``"{split}-h{hops}-{k}"``; the id alone determines the task.

Loaders read the Search-R1 / FlashRAG formats: corpus JSONL rows ``{"id", "contents"}`` with
``contents = '"title"\\ntext'``, and QA JSONL or parquet rows ``{"question", "golden_answers"}``.
"""

from __future__ import annotations

import array
import functools
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agentenv.jsonl import DataFormatError, iter_jsonl

SPLITS = ("train", "test")
SPLIT_BY = ("entity", "question")
"""How test questions are held out: by their start entity (no test entity is ever asked about
in training), or by question (an unseen (start entity, relation chain) pair; entities recur)."""


# ---------------------------------------------------------------------------------------------
# Tasks and documents
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One question with its exact answers.

    ``start`` and ``chain`` (relation keys, one per hop) describe a generated question: the
    scripted expert follows them. Loaded public tasks leave them empty and may lack gold docs.
    """

    id: str
    question: str
    golden_answers: tuple[str, ...]
    gold_doc_ids: tuple[str, ...] = ()
    hops: int = 0
    start: str = ""
    chain: tuple[str, ...] = ()
    split: str = "train"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Doc:
    """A corpus document; ``contents`` is ``'"title"\\ntext'`` as in Search-R1's wiki corpus."""

    id: str
    contents: str

    @property
    def title(self) -> str:
        return doc_title(self.contents)


def doc_title(contents: str) -> str:
    """The title line of ``contents`` without its surrounding quotes."""
    return contents.split("\n", 1)[0].strip().strip('"')


def doc_text(contents: str) -> str:
    """The text of ``contents`` after the title line."""
    parts = contents.split("\n", 1)
    return parts[1].strip() if len(parts) > 1 else ""


# ---------------------------------------------------------------------------------------------
# The world's schema: entity types, and one sentence per relation or attribute
# ---------------------------------------------------------------------------------------------
ENTITY_TYPES = ("person", "company", "city", "country", "university")
_TYPE_SHARES = np.array([0.5, 0.15, 0.2, 0.05, 0.1])
_QUERY_STOPWORDS = frozenset(
    ["a", "an", "the", "of", "in", "is", "was", "by", "as", "its", "to", "at", "has"]
)


@dataclass(frozen=True)
class Relation:
    """A fact about an entity of type ``subject``: a link to a ``target`` entity, or an attribute.

    ``sentence`` states it in the subject's ``doc`` part (``""`` is the main document) with
    ``{s}`` for the subject's name and ``{o}`` for the value; :attr:`pattern` reads the value back.
    ``noun`` names it in questions ("the {noun} of X").
    """

    key: str
    subject: str
    target: str | None
    noun: str
    sentence: str
    doc: str = ""

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        pieces = re.split(r"(\{s\}|\{o\})", self.sentence)
        regex = "".join({"{s}": r"[^.]+?", "{o}": r"([^.]+?)"}.get(p, re.escape(p)) for p in pieces)
        return re.compile(regex)

    @functools.cached_property
    def keywords(self) -> str:
        """The sentence's content words: what a search for this fact should contain."""
        words = re.findall(r"[A-Za-z]+", re.sub(r"\{[so]\}", " ", self.sentence))
        return " ".join(w.lower() for w in words if w.lower() not in _QUERY_STOPWORDS)

    def extract(self, text: str) -> str | None:
        """The value this relation's sentence states in ``text``, if any."""
        match = self.pattern.search(text)
        return match.group(1).strip() if match else None


RELATIONS: dict[str, Relation] = {
    r.key: r
    for r in (
        Relation("birth_year", "person", None, "birth year", "{s} was born in the year {o}."),
        Relation("birthplace", "person", "city", "birthplace", "{s} was born in the city of {o}."),
        Relation("profession", "person", None, "profession", "{s} works as a {o}."),
        Relation("alma_mater", "person", "university", "alma mater", "{s} studied at {o}."),
        Relation("employer", "person", "company", "employer", "{s} is employed by {o}.", "career"),
        Relation("mentor", "person", "person", "mentor", "{s} was mentored by {o}.", "career"),
        Relation("founding_year", "company", None, "founding year", "{s} was founded in {o}."),
        Relation("industry", "company", None, "industry", "{s} operates in the {o} industry."),
        Relation("headquarters", "company", "city", "headquarters city", "{s} has its headquarters in {o}."),
        Relation("founder", "company", "person", "founder", "The founder of {s} is {o}.", "leadership"),
        Relation("ceo", "company", "person", "chief executive", "{s} is led by chief executive {o}.", "leadership"),
        Relation("country", "city", "country", "country", "{s} is a city in the country of {o}."),
        Relation("mayor", "city", "person", "mayor", "The mayor of {s} is {o}."),
        Relation("population", "city", None, "population", "{s} has a population of {o} residents."),
        Relation("capital", "country", "city", "capital", "The capital of {s} is {o}."),
        Relation("currency", "country", None, "currency", "The currency of {s} is the {o}."),
        Relation("language", "country", None, "official language", "The official language of {s} is {o}."),
        Relation("campus_city", "university", "city", "campus city", "{s} has its campus in {o}."),
        Relation("opening_year", "university", None, "opening year", "{s} opened its doors in {o}."),
        Relation("president", "university", "person", "president", "{s} is headed by president {o}."),
    )
}  # fmt: skip
_RELATIONS_BY_TYPE = {t: [r for r in RELATIONS.values() if r.subject == t] for t in ENTITY_TYPES}
_LINKS_BY_TYPE = {t: [r for r in rs if r.target] for t, rs in _RELATIONS_BY_TYPE.items()}

_PROFESSIONS = [
    "painter",
    "baker",
    "pilot",
    "surgeon",
    "teacher",
    "lawyer",
    "chemist",
    "farmer",
    "sculptor",
    "novelist",
    "merchant",
    "botanist",
    "carpenter",
    "diplomat",
    "journalist",
    "musician",
    "physician",
    "geologist",
    "tailor",
    "weaver",
]
_INDUSTRIES = [
    "shipping",
    "textile",
    "mining",
    "software",
    "farming",
    "brewing",
    "glassmaking",
    "aviation",
    "publishing",
    "robotics",
    "banking",
    "ceramics",
    "insurance",
    "railway",
    "fishing",
]
_HOBBIES = [
    "chess",
    "river fishing",
    "old maps",
    "choral singing",
    "beekeeping",
    "kite flying",
    "woodcarving",
    "long walks",
    "astronomy",
    "card games",
]
_COMPANY_SUFFIXES = ("Industries", "Labs", "Group", "Works", "Systems", "Holdings", "Trading")
_UNIVERSITY_SUFFIXES = ("University", "Institute", "Academy", "College")
_PAPERS = ("Herald", "Gazette", "Courier", "Chronicle", "Ledger", "Tribune")
_DISTRACTOR_SENTENCES = (
    "Readers of the {p} asked where {a} was born and who employs {a}, but the column did not say.",
    "A profile of {a} mentioned the founder and the headquarters of {b} without naming either.",
    "Travel notes on {b} discussed its mayor, its population and the capital, and quoted {a}.",
    "An interview asked {a} about the year {b} was founded and about its chief executive.",
    "Letters to the {p} debated which currency and which official language {b} should adopt.",
    "{a} and {b} were both said to have studied, worked and been mentored somewhere in the region.",
)
_FILLERS = {
    "person": tuple(f"{{s}} is fond of {h}." for h in _HOBBIES),
    "company": ("{s} is often mentioned in the {p}.", "{s} keeps a small museum of its history."),
    "city": (
        "Local guides describe {s} as quiet in winter.",
        "Visitors to {s} remark on its old stone bridges.",
    ),
    "country": (
        "{s} appears in several regional almanacs.",
        "{s} is known for its long coastline.",
    ),
    "university": ("{s} publishes a yearly review in the {p}.", "{s} has a famous old library."),
}

# Pronounceable names: onset + vowel syllables, the last one closed by a coda.
_ONSETS = [
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "j",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "z",
    "th",
    "sh",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou"]
_CODAS = ["", "n", "r", "l", "s", "th", "m", "x"]
_OPEN = np.array([o + v for o in _ONSETS for v in _VOWELS], dtype=object)
_CLOSED = np.array([o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS], dtype=object)


def _words(rng: np.random.Generator, n: int, syllables: int, exclude: set[str]) -> list[str]:
    """``n`` distinct capitalized invented words not in ``exclude`` (which is updated)."""
    out: list[str] = []
    while len(out) < n:
        m = int((n - len(out)) * 1.2) + 16
        parts = [_OPEN[rng.integers(len(_OPEN), size=m)] for _ in range(syllables - 1)]
        parts.append(_CLOSED[rng.integers(len(_CLOSED), size=m)])
        for word in np.sum(parts, axis=0) if syllables > 1 else parts[0]:
            word = word.capitalize()
            if word not in exclude:
                exclude.add(word)
                out.append(word)
                if len(out) == n:
                    break
    return out


# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorldConfig:
    """Generator knobs of a world (and so of its corpus).

    ``num_entities``: entities of all types (people 50%, cities 20%, companies 15%, universities
    10%, countries 5%); the corpus has about ``1.65 * num_entities`` entity documents plus
    ``distractors * num_entities`` distractor documents. ``test_fraction``: share of entities
    whose questions are in the ``test`` split.
    """

    seed: int = 0
    num_entities: int = 2000
    distractors: float = 0.5
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.num_entities < 20:
            raise ValueError(f"num_entities must be >= 20, got {self.num_entities}")
        if self.distractors < 0:
            raise ValueError(f"distractors must be >= 0, got {self.distractors}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")


@dataclass
class World:
    """A generated world: entity names, facts, the corpus and the split of every entity.

    Entities have global indices; ``types[i]`` indexes :data:`ENTITY_TYPES`; ``facts[key][i]``
    is the global index of the target entity (relations) or the value string (attributes) for
    subject ``i`` (``None`` where ``i`` has another type).
    """

    config: WorldConfig
    names: list[str]
    aliases: list[tuple[str, ...]]
    types: np.ndarray
    facts: dict[str, list[Any]]
    docs: list[Doc]
    entity_split: np.ndarray
    pools: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def doc_id(self, entity: int, relation: Relation) -> str:
        base = f"{ENTITY_TYPES[self.types[entity]]}-{entity}"
        return f"{base}-{relation.doc}" if relation.doc else base

    def answer(self, entity: int, relation: Relation) -> tuple[str, ...]:
        """The answer and aliases of ``relation`` for ``entity``."""
        value = self.facts[relation.key][entity]
        if relation.target:
            return (self.names[value], *self.aliases[value])
        if relation.key == "population":
            return (value, value.replace(",", ""))
        return (value,)

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of the corpus (ids and contents)."""
        return corpus_sha256(self.docs)

    # -- tasks ----------------------------------------------------------------------------
    def task(self, split: str, hops: int, k: int, split_by: str = "entity") -> Task:
        """Task ``k`` of ``split`` with ``hops`` hops: a pure function of the world and the args.

        ``split_by`` (:data:`SPLIT_BY`) says how the splits are kept apart.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if split_by not in SPLIT_BY:
            raise ValueError(f"unknown split_by {split_by!r}; expected one of {SPLIT_BY}")
        if not 1 <= hops <= 4:
            raise ValueError(f"hops must be in 1..4, got {hops}")
        by_question = split_by == "question"
        rng = np.random.default_rng([self.config.seed, SPLITS.index(split), hops, k, by_question])
        pool = np.arange(len(self.names)) if by_question else self.entity_pool(split)
        for _ in range(1000):
            task = self._walk(rng, int(pool[rng.integers(len(pool))]), hops)
            if task is not None and by_question and self.question_split(*task[:2]) != split:
                continue
            if task is not None:
                start, chain, gold, answers = task
                phrase = self.names[start]
                for key in chain:
                    phrase = f"the {RELATIONS[key].noun} of {phrase}"
                last = RELATIONS[chain[-1]]
                wh = "Who" if last.target == "person" else "What"
                return Task(
                    id=f"{split}{'-q' if by_question else ''}-h{hops}-{k}",
                    question=f"{wh} is {phrase}?",
                    golden_answers=answers,
                    gold_doc_ids=gold,
                    hops=hops,
                    start=self.names[start],
                    chain=chain,
                    split=split,
                )
        raise RuntimeError(f"no {hops}-hop question found for task {split}-h{hops}-{k}")

    def _walk(
        self, rng: np.random.Generator, start: int, hops: int
    ) -> tuple[int, tuple[str, ...], tuple[str, ...], tuple[str, ...]] | None:
        """A random chain of ``hops`` facts from ``start`` visiting distinct entities, or None."""
        entity, visited, chain, gold = start, {start}, [], []
        for hop in range(hops):
            etype = ENTITY_TYPES[self.types[entity]]
            options = _RELATIONS_BY_TYPE[etype] if hop == hops - 1 else _LINKS_BY_TYPE[etype]
            relation = options[rng.integers(len(options))]
            chain.append(relation.key)
            gold.append(self.doc_id(entity, relation))
            if relation.target is None:
                return start, tuple(chain), tuple(gold), self.answer(entity, relation)
            target = self.facts[relation.key][entity]
            if target in visited:
                return None
            visited.add(target)
            if hop == hops - 1:
                return start, tuple(chain), tuple(gold), self.answer(entity, relation)
            entity = target
        return None

    def question_split(self, start: int, chain: tuple[str, ...]) -> str:
        """The split of the question (start entity, relation chain) when splitting by question:
        a stable hash puts a ``test_fraction`` share of all questions in ``test``."""
        digest = zlib.crc32(f"{self.config.seed}|{start}|{'/'.join(chain)}".encode())
        return "test" if digest / 2**32 < self.config.test_fraction else "train"

    def entity_pool(self, split: str) -> np.ndarray:
        """Global indices of the entities whose questions belong to ``split``."""
        return np.flatnonzero(self.entity_split == SPLITS.index(split))

    def task_by_id(self, task_id: str) -> Task:
        """The task named ``task_id`` (``"{split}-h{hops}-{k}"``)."""
        match = re.fullmatch(r"(train|test)(-q)?-h([1-4])-(\d+)", task_id)
        if match is None:
            raise KeyError(
                f"unknown task id {task_id!r}: generated task ids look like 'train-h2-17' "
                f"(split train|test, '-q' when split by question, hops 1-4, index >= 0)"
            )
        split_by = "question" if match[2] else "entity"
        return self.task(match[1], int(match[3]), int(match[4]), split_by)

    def tasks(
        self, split: str, n: int, min_hops: int = 1, max_hops: int = 4, split_by: str = "entity"
    ) -> list[Task]:
        """``n`` tasks of ``split``, cycling hops from ``min_hops`` to ``max_hops``."""
        span = max_hops - min_hops + 1
        return [self.task(split, min_hops + i % span, i // span, split_by) for i in range(n)]


@functools.lru_cache(maxsize=8)
def build_world(config: WorldConfig) -> World:
    """Generate the world of ``config`` (cached: envs and the in-process service share it)."""
    rng = np.random.default_rng([config.seed, 0x5EA2C4])
    counts = np.maximum(np.floor(_TYPE_SHARES * config.num_entities).astype(int), 2)
    types = np.repeat(np.arange(len(ENTITY_TYPES)), counts)
    n = len(types)
    by_type = {t: np.flatnonzero(types == i) for i, t in enumerate(ENTITY_TYPES)}

    taken: set[str] = set()
    first_names = _words(rng, 400, 2, taken)
    names: list[str] = [""] * n
    aliases: list[tuple[str, ...]] = [()] * n
    persons = by_type["person"]
    firsts = rng.integers(len(first_names), size=len(persons))
    for i, f, last in zip(persons, firsts, _words(rng, len(persons), 3, taken), strict=True):
        names[i] = f"{first_names[f]} {last}"
    for i, w, s in zip(
        by_type["company"],
        _words(rng, len(by_type["company"]), 2, taken),
        rng.integers(len(_COMPANY_SUFFIXES), size=len(by_type["company"])),
        strict=True,
    ):
        names[i], aliases[i] = f"{w} {_COMPANY_SUFFIXES[s]}", (w,)
    for i, w in zip(by_type["city"], _words(rng, len(by_type["city"]), 2, taken), strict=True):
        names[i] = w
    countries = by_type["country"]
    for i, w in zip(countries, _words(rng, len(countries), 3, taken), strict=True):
        names[i], aliases[i] = w, (f"Republic of {w}",)
    for i, w, s in zip(
        by_type["university"],
        _words(rng, len(by_type["university"]), 2, taken),
        rng.integers(len(_UNIVERSITY_SUFFIXES), size=len(by_type["university"])),
        strict=True,
    ):
        names[i] = f"{w} {_UNIVERSITY_SUFFIXES[s]}"

    facts = _draw_facts(rng, n, by_type, taken)
    entity_split = (rng.random(n) < config.test_fraction).astype(np.int8)
    world = World(config, names, aliases, types, facts, [], entity_split)
    world.docs = _write_docs(rng, world, by_type)
    return world


def _draw_facts(
    rng: np.random.Generator,
    n: int,
    by_type: dict[str, np.ndarray],
    taken: set[str],
) -> dict[str, list[Any]]:
    def pick(target: str, size: int) -> np.ndarray:
        pool = by_type[target]
        return pool[rng.integers(len(pool), size=size)]

    facts: dict[str, list[Any]] = {key: [None] * n for key in RELATIONS}

    def fill(key: str, values: Iterable[Any]) -> None:
        column = facts[key]
        for i, v in zip(by_type[RELATIONS[key].subject], values, strict=True):
            column[i] = v.item() if isinstance(v, np.generic) else v

    size = {t: len(v) for t, v in by_type.items()}
    people = by_type["person"]
    fill("birth_year", rng.integers(1920, 2006, size=size["person"]).astype(str))
    fill("birthplace", pick("city", size["person"]))
    fill("profession", np.array(_PROFESSIONS)[rng.integers(len(_PROFESSIONS), size=size["person"])])
    fill("alma_mater", pick("university", size["person"]))
    fill("employer", pick("company", size["person"]))
    # Mentor: another person (a random non-zero shift within the people list).
    shift = rng.integers(1, len(people), size=len(people))
    fill("mentor", people[(np.arange(len(people)) + shift) % len(people)])
    fill("founding_year", rng.integers(1800, 2015, size=size["company"]).astype(str))
    fill("industry", np.array(_INDUSTRIES)[rng.integers(len(_INDUSTRIES), size=size["company"])])
    fill("headquarters", pick("city", size["company"]))
    fill("founder", pick("person", size["company"]))
    fill("ceo", pick("person", size["company"]))
    # Every country gets at least one city, so that it has a capital in it.
    countries, cities = by_type["country"], by_type["city"]
    city_country = countries[rng.integers(len(countries), size=len(cities))]
    city_country[: len(countries)] = countries
    fill("country", city_country)
    fill("mayor", pick("person", size["city"]))
    fill("population", [f"{p:,}" for p in rng.integers(2_000, 5_000_000, size=len(cities))])
    order = rng.permutation(len(cities))
    capital = dict(zip(city_country[order].tolist(), cities[order].tolist(), strict=True))
    fill("capital", [capital[c] for c in countries.tolist()])
    fill("currency", [w.lower() for w in _words(rng, len(countries), 2, taken)])
    fill("language", [f"{w}ish" for w in _words(rng, len(countries), 2, taken)])
    fill("campus_city", pick("city", size["university"]))
    fill("opening_year", rng.integers(1400, 2000, size=size["university"]).astype(str))
    fill("president", pick("person", size["university"]))
    return facts


def _write_docs(
    rng: np.random.Generator, world: World, by_type: dict[str, np.ndarray]
) -> list[Doc]:
    docs: list[Doc] = []
    names, facts = world.names, world.facts
    for etype in ENTITY_TYPES:
        parts: dict[str, list[Relation]] = {}
        for r in _RELATIONS_BY_TYPE[etype]:
            parts.setdefault(r.doc, []).append(r)
        entities = by_type[etype]
        fillers = rng.integers(len(_FILLERS[etype]), size=len(entities))
        papers = rng.integers(len(_PAPERS), size=len(entities))
        for e, fi, pi in zip(entities.tolist(), fillers, papers, strict=True):
            name = names[e]
            for part, relations in parts.items():
                sentences = [
                    r.sentence.format(s=name, o=names[v] if r.target else v)
                    for r in relations
                    for v in (facts[r.key][e],)
                ]
                title = f"{name} ({part})" if part else name
                if not part:
                    sentences.append(_FILLERS[etype][fi].format(s=name, p=_PAPERS[pi]))
                doc_id = f"{etype}-{e}-{part}" if part else f"{etype}-{e}"
                docs.append(Doc(doc_id, f'"{title}"\n' + " ".join(sentences)))
    n = len(names)
    count = int(round(world.config.distractors * n))
    ab = rng.integers(n, size=(count, 2))
    templates = rng.integers(len(_DISTRACTOR_SENTENCES), size=(count, 2))
    papers = rng.integers(len(_PAPERS), size=count)
    for j in range(count):
        a, b = names[ab[j, 0]], names[ab[j, 1]]
        paper = _PAPERS[papers[j]]
        text = " ".join(_DISTRACTOR_SENTENCES[t].format(a=a, b=b, p=paper) for t in templates[j])
        docs.append(Doc(f"news-{j}", f'"{paper} notes {j}"\n{text}'))
    return docs


def corpus_sha256(docs: Iterable[Doc]) -> str:
    """sha256 over the ids and contents of ``docs`` (the index cache key)."""
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(doc.id.encode())
        digest.update(b"\x00")
        digest.update(doc.contents.encode())
        digest.update(b"\x01")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Public formats (Search-R1 / FlashRAG)
# ---------------------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    """sha256 of the bytes of ``path``: a corpus file's fingerprint (and its index cache key).

    Cached per (path, size, modification time), so many envs checking one large corpus file
    read it once.
    """
    stat = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def iter_corpus(path: str | Path) -> Iterator[Doc]:
    """Documents of a corpus JSONL file: rows ``{"id", "contents"}`` (or ``{"id", "title",
    "text"}``, joined into ``'"title"\\ntext'``).

    Raises :class:`DataFormatError` naming ``file:line`` for a bad row (not UTF-8, not a JSON
    object, a missing field) and, once the whole file is read, for the second occurrence of a
    document id (ids name documents: ``7`` and ``"7"`` are the same id).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    id_hashes = array.array("q")
    for lineno, row in iter_jsonl(path):
        doc = _corpus_doc(row, f"{path}:{lineno}")
        id_hashes.append(hash(doc.id))
        yield doc
    _check_unique_ids(path, np.frombuffer(id_hashes, dtype=np.int64))


def _corpus_doc(row: dict[str, Any], where: str) -> Doc:
    doc_id, contents = row.get("id"), row.get("contents")
    if contents is None and isinstance(row.get("title"), str) and isinstance(row.get("text"), str):
        contents = f'"{row["title"]}"\n{row["text"]}'
    if not isinstance(doc_id, str | int) or isinstance(doc_id, bool):
        raise DataFormatError(f"{where}: field 'id' must be a string or an integer")
    if not isinstance(contents, str):
        raise DataFormatError(f"{where}: field 'contents' must be a string")
    return Doc(str(doc_id), contents)


def _check_unique_ids(path: Path, id_hashes: np.ndarray) -> None:
    """Raise :class:`DataFormatError` at the second occurrence of a repeated document id.

    The first pass keeps only 8-byte hashes of the ids (a few hundred MB for a 21M-document
    corpus); only when two hashes agree is the file read again to find the rows.
    """
    ordered = np.sort(id_hashes)
    suspects = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not suspects:
        return
    first_line: dict[str, int] = {}
    for lineno, row in iter_jsonl(path):
        doc_id = str(row["id"])
        if hash(doc_id) not in suspects:
            continue
        if doc_id in first_line:
            raise DataFormatError(
                f"{path}:{lineno}: duplicate document id {doc_id!r} (first at line "
                f"{first_line[doc_id]}); every document of a corpus needs its own id"
            )
        first_line[doc_id] = lineno


def load_corpus(path: str | Path) -> list[Doc]:
    """All documents of a corpus JSONL file (see :func:`iter_corpus`)."""
    return list(iter_corpus(path))


def load_qa(path: str | Path, split: str = "train") -> list[Task]:
    """Tasks of a QA file, JSONL or parquet: rows ``{"question", "golden_answers"}``.

    ``golden_answers`` is a list of strings (a single string is accepted); an optional ``id``
    names the task, else it is ``"{file stem}-{row}"``; an optional ``gold_doc_ids`` (a list of
    document ids, as :func:`save_qa` writes for generated tasks) names the documents that answer
    it. Raises :class:`DataFormatError` naming the line (JSONL) or row (parquet).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"QA file not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # optional (the dev extra): parquet QA files only

        rows: Iterable[tuple[int, dict[str, Any]]] = enumerate(pq.read_table(path).to_pylist())
        where = "row"
    else:
        rows, where = iter_jsonl(path), "line"
    tasks = []
    for n, row in rows:
        question, answers = row.get("question"), row.get("golden_answers")
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(question, str) or not question.strip():
            raise DataFormatError(
                f"{path}: {where} {n}: field 'question' must be a non-empty string"
            )
        if (
            not isinstance(answers, list | tuple)
            or not answers
            or not all(isinstance(a, str) for a in answers)
        ):
            raise DataFormatError(
                f"{path}: {where} {n}: field 'golden_answers' must be a non-empty list of strings"
            )
        gold = row.get("gold_doc_ids") or []
        if not isinstance(gold, list | tuple) or not all(
            isinstance(d, str | int) and not isinstance(d, bool) for d in gold
        ):
            raise DataFormatError(
                f"{path}: {where} {n}: field 'gold_doc_ids' must be a list of document ids"
            )
        task_id = str(row.get("id", f"{path.stem}-{n}"))
        tasks.append(
            Task(
                task_id,
                question.strip(),
                tuple(answers),
                gold_doc_ids=tuple(map(str, gold)),
                split=split,
            )
        )
    return tasks


@dataclass(frozen=True)
class QASource:
    """The finite splits of QA files and their tasks by id (see :func:`load_qa_splits`)."""

    splits: dict[str, tuple[Task, ...]]
    by_id: dict[str, Task]


def load_qa_splits(qa: str | Path | Mapping[str, str | Path]) -> QASource:
    """The finite splits of QA files: one path is every split (``train`` and ``test`` list the
    same rows), a mapping names a file per split. A task id may name only one row in all files.

    Cached per (split, path, size, modification time): the many envs of a run built on one file
    (one per episode) parse it once.
    """
    named = {None: qa} if isinstance(qa, str | Path) else dict(qa)
    key = []
    for name, path in named.items():
        stat = Path(path).stat() if Path(path).is_file() else None
        key.append((name, str(path), stat and (stat.st_size, stat.st_mtime_ns)))
    return _load_qa_splits(tuple(key))


@functools.lru_cache(maxsize=16)
def _load_qa_splits(key: tuple[tuple[str | None, str, Any], ...]) -> QASource:
    if key[0][0] is None:
        path = key[0][1]
        files = {path: tuple(load_qa(path, "qa"))}
        splits = dict.fromkeys(SPLITS, files[path])
    else:
        files = {path: tuple(load_qa(path, str(name))) for name, path, _ in key}
        splits = {str(name): files[path] for name, path, _ in key}
    by_id: dict[str, Task] = {}
    where: dict[str, str] = {}
    for path, tasks in files.items():
        if not tasks:
            raise DataFormatError(f"{path}: the QA file has no rows")
        for task in tasks:
            if task.id in where:
                raise DataFormatError(
                    f"{path}: task id {task.id!r} also names a row of {where[task.id]}; "
                    "give every QA row a unique id"
                )
            where[task.id], by_id[task.id] = path, task
    return QASource(splits, by_id)


def save_corpus(docs: Iterable[Doc], path: str | Path) -> None:
    """Write ``docs`` as corpus JSONL (``{"id", "contents"}`` per line)."""
    with Path(path).open("w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps({"id": doc.id, "contents": doc.contents}, ensure_ascii=False) + "\n")


def save_qa(tasks: Iterable[Task], path: str | Path) -> None:
    """Write ``tasks`` as QA JSONL (``{"id", "question", "golden_answers"}`` per line, plus
    ``gold_doc_ids`` for tasks that have them)."""
    with Path(path).open("w", encoding="utf-8") as f:
        for t in tasks:
            row: dict[str, Any] = {
                "id": t.id,
                "question": t.question,
                "golden_answers": list(t.golden_answers),
            }
            if t.gold_doc_ids:
                row["gold_doc_ids"] = list(t.gold_doc_ids)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
