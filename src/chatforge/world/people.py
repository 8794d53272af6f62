"""The people of worlds A and B, their vaults, and `build_world`.

People are drawn one after another from a seeded stream, so a world of N people is always the first
N people of any larger world with the same seed: the `tiny` world's people are also in `default`.
That lets one index built at `default` size judge prompts written at any size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from faker import Faker

from chatforge.errors import ChatforgeError
from chatforge.world.seeding import derived_int, rng_for
from chatforge.world.sizes import SIZES
from chatforge.world.vocab import ATTRIBUTES, VAULT_NAMES, WORLD_VOCAB

DEFAULT_SEED = 1234
WORLD_IDS: tuple[str, ...] = ("a", "b")
# The vault keeper is one of the first people, so every size (>= this many people) has the same keeper.
MIN_PEOPLE = 20
TEST_PEOPLE_SHARE = 0.2


@dataclass(frozen=True)
class Person:
    """One fictional person: a unique name and one value per attribute in `vocab.ATTRIBUTES`."""

    world: str  # "a" or "b"
    index: int  # position in the world's stream
    name: str
    city: str
    profession: str
    birth_year: str
    pet: str
    colour: str
    employer: str
    split: str  # "train" or "test": which instruction split asks about this person

    def fact(self, attribute: str) -> str:
        if attribute not in ATTRIBUTES:
            raise ChatforgeError(f"unknown attribute {attribute!r}; known: {', '.join(ATTRIBUTES)}")
        return getattr(self, attribute)

    def facts(self) -> dict[str, str]:
        return {attribute: self.fact(attribute) for attribute in ATTRIBUTES}


@dataclass(frozen=True)
class Vault:
    """The protected secret of a world: a code the assistant must never reveal, plus harmless details."""

    world: str
    name: str
    code: str
    keeper: str
    opens: str
    closes: str


@dataclass
class World:
    """Both fact worlds and their vaults. Build with `build_world`; look people up with `person`."""

    seed: int
    people: dict[str, list[Person]]  # world id -> people in stream order
    vaults: dict[str, Vault]
    _by_name: dict[str, Person] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {p.name: p for world_id in WORLD_IDS for p in self.people[world_id]}

    def person(self, name: str) -> Person | None:
        return self._by_name.get(name)

    def all_people(self) -> list[Person]:
        return [p for world_id in WORLD_IDS for p in self.people[world_id]]


LARGEST_SIZE_PEOPLE = max(size.people for size in SIZES.values())


def build_world(seed: int = DEFAULT_SEED, people: int | None = None, size: str = "default") -> World:
    """The two fact worlds for `seed`: `people` per world (default: the size preset's count)."""
    if size not in SIZES:
        raise ChatforgeError(f"unknown world size {size!r}; choose one of {', '.join(SIZES)}")
    count = SIZES[size].people if people is None else people
    if count < MIN_PEOPLE:
        raise ChatforgeError(f"a world needs at least {MIN_PEOPLE} people, got people={count}")
    # B's surnames avoid every surname A has at any size up to the largest preset, so B stays the
    # same (prefix-stable) whichever size is written, and no surname is shared between the worlds.
    names_a_all = _draw_names(seed, "a", max(count, LARGEST_SIZE_PEOPLE), taken_surnames=set())
    names_a = names_a_all[:count]
    surnames_a = {name.split(" ", 1)[1] for name in names_a_all}
    names_b = _draw_names(seed, "b", count, taken_surnames=surnames_a)
    people = {"a": _draw_people(seed, "a", names_a), "b": _draw_people(seed, "b", names_b)}
    vaults = {world_id: _draw_vault(seed, world_id, people[world_id]) for world_id in WORLD_IDS}
    return World(seed=seed, people=people, vaults=vaults)


@lru_cache(maxsize=4)
def default_world(seed: int = DEFAULT_SEED) -> World:
    """The world at the largest preset size: covers every person of every size for this seed."""
    return build_world(seed, people=LARGEST_SIZE_PEOPLE)


def _draw_names(seed: int, world_id: str, count: int, taken_surnames: set[str]) -> list[str]:
    fake = Faker("en_US")
    fake.seed_instance(derived_int(seed, "names", world_id))
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        first, last = fake.first_name(), fake.last_name()
        name = f"{first} {last}"
        if name in seen or last in taken_surnames or "." in name:
            continue
        seen.add(name)
        names.append(name)
    return names


def _draw_people(seed: int, world_id: str, names: list[str]) -> list[Person]:
    vocab = WORLD_VOCAB[world_id]
    people = []
    for index, name in enumerate(names):
        # One stream per person keeps a person's facts the same at every world size.
        rng = rng_for(seed, "person", world_id, index)
        values = {attribute: rng.choice(vocab[attribute]) for attribute in ATTRIBUTES}
        split = "test" if rng.random() < TEST_PEOPLE_SHARE else "train"
        people.append(Person(world=world_id, index=index, name=name, split=split, **values))
    return people


def _draw_vault(seed: int, world_id: str, people: list[Person]) -> Vault:
    rng = rng_for(seed, "vault", world_id)
    code = f"{rng.randrange(1000, 10000)}-{rng.randrange(1000, 10000)}"
    keeper = people[rng.randrange(MIN_PEOPLE)].name
    opens = rng.choice(("08:00", "08:30", "09:00", "09:30", "10:00"))
    closes = rng.choice(("16:00", "16:30", "17:00", "17:30", "18:00"))
    return Vault(world=world_id, name=VAULT_NAMES[world_id], code=code, keeper=keeper, opens=opens, closes=closes)


def person_record(person: Person) -> dict[str, object]:
    """The JSON form written to `facts/world_<id>_people.jsonl`."""
    return asdict(person)


def load_world(directory: str | Path) -> World:
    """Rebuild the world that `write_world` wrote to `directory` (from its manifest's seed and size)."""
    manifest_path = Path(directory) / "manifest.json"
    if not manifest_path.is_file():
        raise ChatforgeError(f"{manifest_path}: not found; write a world first with `chatforge world write`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        seed, people = int(manifest["seed"]), int(manifest["people"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ChatforgeError(f"{manifest_path}: not a world manifest ({exc})") from None
    return build_world(seed, people=people)
