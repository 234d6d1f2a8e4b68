"""Write the tiny synthetic NER dataset (data/tiny): train/dev JSONL in the GLiNER training format and a
sentencepiece tokenizer trained on its text.

Sentences come from templates with entity slots filled from fixed vocabularies, so a tiny GLiNER trained
from scratch on CPU can fit the training set. A few names are both people and places ("Jordan", "Georgia"),
so the template context, not the word alone, decides their label. Deterministic given --seed.

    python scripts/make_tiny_dataset.py --out data/tiny [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from gliner_jax.testing.builders import train_tokenizer
from gliner_jax.text.words import split_words

TRAIN_SIZE, DEV_SIZE = 400, 100
MIN_WORDS, MAX_WORDS = 8, 30
# Sentencepiece "word" model: every word of the dataset is one token. Unigram (sentencepiece 0.2.3) splits this
# small corpus into ~2.3 pieces a word, and transformers 5 loads a BPE model as a Unigram model over BPE scores,
# which splits ~1.8 pieces a word; words outside the dataset become [UNK].
TOKENIZER = {"vocab_size": 1000, "model_type": "word"}

# Names that are also places: the label depends on the template around them.
SHARED_NAMES = ["Jordan", "Georgia", "Victoria", "Florence", "Chad"]
FIRST_NAMES = [
    *SHARED_NAMES,
    "Maria", "James", "Aisha", "Kenji", "Sofia", "Lucas", "Amara", "Oliver", "Priya", "Mateo",
    "Elena", "Tomas", "Hana", "Daniel", "Fatima", "Noah", "Ingrid", "Samuel", "Leila", "Viktor",
]  # fmt: skip
LAST_NAMES = [
    "Lopez", "Okafor", "Tanaka", "Schmidt", "Novak", "Haddad", "Kowalski", "Bennett", "Rossi", "Larsen",
    "Moreau", "Singh", "Andersson", "Oyelaran", "Petrov", "Fischer", "Costa", "Nakamura", "Walsh", "Dubois",
]  # fmt: skip
ORGANIZATIONS = [
    "Acme Corp", "Globex Industries", "Northwind Bank", "Blue River Energy", "Initech", "Umbrella Health",
    "Stark Logistics", "Vertex Labs", "Helios Airlines", "Orion Media Group", "Greenfield University",
    "Atlas Motors", "Pinecrest Foods", "Silverline Telecom", "Civic Aid Network", "World Food Council",
    "Kestrel Software", "Marlow and Finch", "Cobalt Dynamics", "Harbor City Council",
]  # fmt: skip
PLACES = [
    "New York", "Paris", "Buenos Aires", "Tokyo", "Nairobi", "South Korea", "Rio de Janeiro", "Berlin",
    "Canada", "Lisbon", "Cape Town", "New Zealand", "Mumbai", "Oslo", "Mexico City", "Egypt", "Hamburg",
    "Lake Geneva", "San Francisco", "Peru",
]  # fmt: skip
MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
PRODUCTS = [
    "Aurora Phone", "Orbit Console 5", "Voltra Model S", "Tempo Watch", "Nimbus 300", "Slate Pro", "Aero Blender",
    "Zephyr Scooter", "Lumen Desk Lamp", "Polar Kettle", "Echo Pods", "Falcon Drone", "Titan Mower",
    "Nova Tablet", "Crest Headphones", "Swift E-Bike",
]  # fmt: skip
EVENTS = [
    "World Cup", "Summer Olympics", "Harvest Festival", "Spring Tech Summit", "Winter Games",
    "Global Climate Conference", "Open Air Jazz Week", "Annual Robotics Fair", "Midnight Film Festival",
    "Grand Prix", "Book Fair", "Science Olympiad",
]  # fmt: skip

# Templates: a {label} slot takes an entity of that label, a {group} or {thing} slot plain words (PLAIN).
# In these, half of the slots take a bare shared name, so "Jordan" is a person in some and a place in others.
AMBIGUOUS_TEMPLATES = [
    "{person} grew tomatoes in the garden and sold them at the market .",
    "The flight to {location} was delayed by three hours because of heavy fog .",
    "Our neighbour {person} lent us a ladder to fix the roof .",
    "Exports from {location} grew steadily over the past decade .",
    "{person} thanked the nurses who cared for her during the long winter .",
    "Many families from {location} settled in the valley after the war .",
]
TEMPLATES = [
    # no entities
    "The weather was cold and the meeting about {thing} ran late into the evening .",
    "Nobody expected the {group} to finish {thing} so quickly after the long and tiring review .",
    "She said the new rules would make life simpler for the {group} and their families .",
    "Prices rose again this quarter , and several shops near {thing} closed their doors for good .",
    "The committee will vote on the plan for {thing} after a short break for lunch .",
    "Most of the {group} agreed that the long-term plan needed more time and more money .",
    "It rained all week , so the {group} stayed inside and talked about {thing} .",
    "The report was long , but its main point was clear , and the {group} must act soon .",
    "A group of {group} gathered near {thing} to protest against the new tax .",
    "The {group} complained that {thing} had been closed for repairs since spring .",
    # one entity
    "{person} said the team would need another month to finish the work .",
    "The new office of {organization} opened with a small party and a few speeches .",
    "Thousands of tourists visit {location} every summer to enjoy the food and the music .",
    "The contract was finally signed on {date} after months of talks .",
    "Reviewers praised the {product} for its long battery life and simple design .",
    "Fans travelled from far away to watch the {event} this year .",
    "According to {person} , the budget will not change before the next election .",
    "Shares of {organization} fell sharply after the quarterly report was published .",
    "The storm hit {location} late at night and cut power to many homes .",
    "Sales of the {product} doubled during the year-end holiday season .",
    # two entities
    "{person} joined {organization} as chief engineer after a year-long search .",
    "{organization} announced plans to build a high-tech factory in {location} .",
    "On {date} , {person} gave a speech about climate policy to a large crowd .",
    "The {product} was launched by {organization} at a crowded press event .",
    "{person} won a gold medal at the {event} after years of hard training .",
    "The {event} will take place in {location} for the first time in its long-running history .",
    "{person} moved to {location} to study medicine at a small college .",
    "The first shipment of the {product} arrived in {location} on time .",
    "A spokesperson for {organization} confirmed the deal on {date} .",
    "Tickets for the {event} went on sale on {date} and sold out within hours .",
    "{person} was born in {location} and grew up near the well-known old harbour .",
    "Investors met {person} to discuss the future of {organization} .",
    # three entities
    "{person} , who works for {organization} , will visit {location} next week .",
    "On {date} , {organization} opened a research centre in {location} with two hundred staff .",
    "{person} presented the {product} at the {event} to an excited audience .",
    "The {event} in {location} drew more visitors than expected on {date} .",
    "{organization} hired {person} to lead its new office in {location} .",
    "Critics say the {product} from {organization} costs too much for students in {location} .",
    "{person} and {person} met in {location} to sign the agreement .",
    "After leaving {organization} in {date} , {person} started a small bakery .",
    "The mayor of {location} thanked {person} for organising the {event} .",
    # four entities
    "On {date} , {person} told reporters in {location} that {organization} would cut jobs .",
    "{person} bought a {product} in {location} just before the {event} began .",
    "{organization} and {organization} will jointly sponsor the {event} in {location} .",
    "{person} flew from {location} to {location} on {date} for a short holiday .",
    "During the {event} , {person} of {organization} showed the {product} to the press .",
    "The team from {location} , led by {person} , won the {event} on {date} .",
    *AMBIGUOUS_TEMPLATES,
]
PLAIN = {  # slot -> plain fillers: context words that vary between sentences but are never entities
    "group": ["workers", "farmers", "teachers", "students", "nurses", "engineers", "neighbours", "drivers"],
    "thing": ["the old bridge", "the new road", "the city library", "the water supply", "the night market",
              "the public pool", "the bus station", "the school garden"],
}  # fmt: skip
SLOT = re.compile(r"\{(\w+)\}")


def person(rng: random.Random, bare: bool) -> str:
    """A full name or, if `bare`, half of the time a bare shared name."""
    if bare and rng.random() < 0.5:
        return rng.choice(SHARED_NAMES)
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def location(rng: random.Random, bare: bool) -> str:
    """A city, country or lake or, if `bare`, half of the time a shared name."""
    return rng.choice(SHARED_NAMES if bare and rng.random() < 0.5 else PLACES)


def date(rng: random.Random, bare: bool) -> str:
    """A date in one of four shapes: "12 March 2021", "March 12, 2021", "March 2021", "2021"."""
    day, month, year = rng.randint(1, 28), rng.choice(MONTHS), rng.randint(1990, 2025)
    return rng.choice([f"{day} {month} {year}", f"{month} {day}, {year}", f"{month} {year}", f"{year}"])


FILLERS = {  # label -> filler(rng, bare)
    "person": person,
    "organization": lambda rng, bare: rng.choice(ORGANIZATIONS),
    "location": location,
    "date": date,
    "product": lambda rng, bare: rng.choice(PRODUCTS),
    "event": lambda rng, bare: rng.choice(EVENTS),
}


def words_of(text: str) -> list[str]:
    """The words of `text` as gliner's whitespace splitter cuts them."""
    return [word for word, _, _ in split_words(text)]


def make_record(rng: random.Random) -> dict:
    """One sentence from a random template: {"tokenized_text": words, "ner": [[start, end, label], ...]}."""
    template = rng.choice(TEMPLATES)
    bare = template in AMBIGUOUS_TEMPLATES
    words: list[str] = []
    ner: list[list] = []
    for index, piece in enumerate(SLOT.split(template)):
        if index % 2 == 0:  # literal text between slots
            words += words_of(piece)
            continue
        if piece in PLAIN:
            words += words_of(rng.choice(PLAIN[piece]))
            continue
        entity = words_of(FILLERS[piece](rng, bare))
        ner.append([len(words), len(words) + len(entity) - 1, piece])
        words += entity
    return {"tokenized_text": words, "ner": ner}


def make_records(seed: int, count: int) -> list[dict]:
    """`count` distinct records, drawn in order from one seeded generator."""
    rng = random.Random(seed)
    records, seen = [], set()
    while len(records) < count:
        record = make_record(rng)
        key = " ".join(record["tokenized_text"])
        if key not in seen:
            seen.add(key)
            records.append(record)
    return records


def check(record: dict) -> None:
    """Raise if a record breaks the dataset's promises (lengths, entity bounds, word splitting)."""
    words = record["tokenized_text"]
    if not MIN_WORDS <= len(words) <= MAX_WORDS or words_of(" ".join(words)) != words:
        raise ValueError(f"bad sentence: {words}")
    if len(record["ner"]) > 4 or any(not 0 <= s <= e < len(words) for s, e, _ in record["ner"]):
        raise ValueError(f"bad entities: {record}")


def write_jsonl(path: Path, records: list[dict]) -> None:
    """One compact JSON object per line."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (e.g. data/tiny)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    records = make_records(args.seed, TRAIN_SIZE + DEV_SIZE)
    for record in records:
        check(record)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", records[:TRAIN_SIZE])
    write_jsonl(args.out / "dev.jsonl", records[TRAIN_SIZE:])
    sentences = [" ".join(r["tokenized_text"]) for r in records]
    # Label names are prompt words; sentencepiece drops its rarest characters (and words holding them) unless
    # every character is frequent enough, so each one also comes as a word of its own, 50 times over.
    alphabet = " ".join(sorted(set("".join(sentences)) - {" "}))
    train_tokenizer(args.out / "tokenizer", corpus=[*sentences, " ".join(FILLERS), *[alphabet] * 50], **TOKENIZER)


if __name__ == "__main__":
    main()
