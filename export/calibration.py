"""Texts for calibrating int8 quantisation: the user's own, or generic built-in ones.

The int8 recipe (`quantize.py`) rescales activations by their per-channel maxima, measured by
running the fp32 graph on these texts. In-domain texts (queries and passages like those the
index will hold: `bertdot export --calibration corpus.jsonl`) are best; without them the
built-in generator below gives everyday queries and passages on sixteen topics. The same
generator feeds the benchmarks' synthetic corpora.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from bertdot.export.errors import ExportError

CALIBRATION_TEXTS = 512  # texts the recipe reads; more changed no measured maximum by > 1%

TOPICS = {
    "astronomy": "planet orbit telescope galaxy comet nebula gravity solar eclipse asteroid",
    "cooking": "recipe oven flour butter garlic simmer sauce bake spice dough",
    "finance": "interest mortgage loan inflation bond dividend stock budget credit tax",
    "medicine": "symptom vaccine diagnosis fever antibiotic dose surgery chronic blood therapy",
    "computing": "compiler memory processor kernel database network python cache thread server",
    "history": "empire treaty revolution dynasty medieval war colony monarchy republic ancient",
    "gardening": "soil seed compost prune tomato fertilizer bloom root shade watering",
    "travel": "passport flight visa hotel luggage airport itinerary border train museum",
    "music": "guitar melody chord rhythm orchestra tempo piano concert lyrics album",
    "law": "contract court lawsuit judge statute appeal liability tenant attorney verdict",
    "biology": "cell protein gene enzyme species evolution membrane bacteria dna photosynthesis",
    "cars": "engine brake tire fuel transmission battery mileage diesel clutch warranty",
    "climate": "rainfall drought carbon emissions glacier temperature flood forecast storm",
    "education": "teacher exam curriculum student degree tuition lecture homework grade campus",
    "pets": "puppy kitten veterinarian leash litter breed grooming adoption aquarium collar",
    "sports": "goal referee tournament coach league stadium penalty season sprint marathon",
}
SENTENCES = (
    "The {a} is closely related to the {b}, which many people confuse with {c}.",
    "Experts recommend checking the {a} before you think about {b} or {c}.",
    "In most cases {a} and {b} change together, especially when {c} is involved.",
    "A common question is how the {a} affects the {b} over time.",
    "Recent reports describe new ways to measure {a} without an expensive {b}.",
    "Costs vary widely: the price of {a} depends on the {b} and on location.",
    "Historically the {a} was rare, but today {b} and {c} are part of everyday life.",
    "If the {a} fails, problems with the {b} usually follow within days.",
    "According to a 2019 survey, 42% of respondents never compared {a} with {b}.",
    "Use a {a} sparingly; too much {b} can ruin the {c}.",
)
QUERIES = (
    "what is {a}",
    "how does {a} affect {b}",
    "{a} vs {b}",
    "why is my {a} {b}",
    "how to choose a {a} for {b}",
    "{a} {b} {c}",
    "define {a}",
    "average cost of {a} and {b}",
    "when should i check the {a}",
    "is {a} bad for {b}?",
)
EDGE_TEXTS = (
    "A",
    "???",
    "2024 tax year form 1040 deadline",
    "Crème brûlée recipe à la française, with ünïcödé and CJK 漢字",
    "WHAT IS THE BEST TELESCOPE FOR A BEGINNER",
    "email me at someone@example.com or call +1 (555) 010-9999",
)


def _fill(template: str, words: Sequence[str], rng: random.Random) -> str:
    a, b, c = rng.sample(list(words), 3)
    text = template.format(a=a, b=b, c=c)
    return text[0].upper() + text[1:] if template.endswith(".") else text


def generated_corpus(
    rng: random.Random, passages: int, queries: int
) -> tuple[list[str], list[str]]:
    """Topical passages (2 to 6 sentences, some off-topic) and short queries about them."""
    topics = [words.split() for words in TOPICS.values()]
    corpus = []
    for _ in range(passages):
        topic = rng.choice(topics)
        sentences = []
        for _ in range(rng.randint(2, 6)):
            words = rng.choice(topics) if rng.random() < 0.25 else topic
            sentences.append(_fill(rng.choice(SENTENCES), words, rng))
        corpus.append(" ".join(sentences))
    asked = [_fill(rng.choice(QUERIES), rng.choice(topics), rng) for _ in range(queries)]
    return corpus, asked


def builtin_texts(count: int = CALIBRATION_TEXTS, seed: int = 0) -> list[str]:
    """Half queries, half passages, plus the edge cases, from the generator above."""
    passages, queries = generated_corpus(random.Random(seed), count // 2, count // 2)
    return [*EDGE_TEXTS, *queries, *passages][:count]


def read_texts(path: Path, count: int = CALIBRATION_TEXTS, seed: int = 0) -> list[str]:
    """Up to `count` texts from a file: JSON lines with "text" (and "title", joined as the
    index joins them), or plain text with one text per line; a random sample of a larger file."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read calibration texts from {path}: {exc}") from exc
    texts = []
    for number, line in enumerate(lines, 1):
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
                title, text = record.get("title") or "", record["text"]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise ExportError(
                    f'{path}:{number}: expected a JSON object with "text" ({exc})'
                ) from exc
            texts.append(f"{title} {text}".strip() if title else str(text))
        else:
            texts.append(line)
    if not texts:
        raise ExportError(f"{path} holds no calibration texts")
    if len(texts) > count:
        texts = random.Random(seed).sample(texts, count)
    return texts


def split_holdout(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """Every other text calibrates; the rest checks the result on texts it never saw."""
    return list(texts[0::2]), list(texts[1::2])
