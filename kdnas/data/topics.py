"""Zero-shot cross-lingual tasks: `SOURCE>TARGET` references, topic label maps between the zoo's wiki-vital
languages, and the label space a source and a target task share (`shared_label_space`).

A zero-shot task fine-tunes on the source task (its train / dev) and tests on the target task's test split. The
two label sets need not match one to one: every label is placed on a language-neutral *pivot* vocabulary
(`TOPIC_PIVOTS` for the zoo topic tasks; a task file's labels are their own pivots, so files with the same label
names line up), and the shared classes are the connected groups of source and target labels that share a pivot.
Source labels in no shared class are left out of the prediction; target examples whose label is in no shared
class are left out of the test set and counted (`ZeroShotTask.excluded`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kdnas.data.tasks import TASK_LANGUAGES, Task, TaskSplit, load_task
from kdnas.errors import DataError

log = logging.getLogger(__name__)

ZERO_SHOT_SEP = ">"

# Each wiki-vital topic on a shared pivot vocabulary. Checked against the data (docs/evaluation.md, and
# tests/integration/test_evaluate.py): of the articles titled alike in two languages, the topics fall in the same
# shared class for 99.4% of 2,307 en/fr and 98.2% of 1,293 en/es titles. fr maps one to one: "Santé et médecine"
# holds animals, plants and medicine (en "Biology and health sciences"), "Science" physics, chemistry, astronomy
# and earth science (en "Physical sciences"). es has 8 topics: its
# "Antropología, sicología y vida cotidiana" holds sports, food, games and clothing (en "Everyday life") and
# languages, writing systems and psychology (en "Society and social sciences"); es has no biology or
# physical-science topic, so those en topics have no es counterpart.
TOPIC_PIVOTS: dict[str, dict[str, tuple[str, ...]]] = {
    "wiki-vital-en": {
        "Arts": ("arts",),
        "Biology and health sciences": ("biology-health",),
        "Everyday life": ("everyday-life",),
        "Geography": ("geography",),
        "History": ("history",),
        "Mathematics": ("mathematics",),
        "People": ("people",),
        "Philosophy and religion": ("philosophy-religion",),
        "Physical sciences": ("physical-sciences",),
        "Society and social sciences": ("society",),
        "Technology": ("technology",),
    },
    "wiki-vital-fr": {
        "Arts et culture": ("arts",),
        "Géographie": ("geography",),
        "Histoire": ("history",),
        "Mathématiques": ("mathematics",),
        "Personnalités": ("people",),
        "Philosophie et religion": ("philosophy-religion",),
        "Santé et médecine": ("biology-health",),
        "Science": ("physical-sciences",),
        "Société et sciences sociales": ("society",),
        "Technologie": ("technology",),
        "Vie quotidienne": ("everyday-life",),
    },
    "wiki-vital-es": {
        "Antropología, sicología y vida cotidiana": ("everyday-life", "society"),
        "Artes": ("arts",),
        "Filosofía y religión": ("philosophy-religion",),
        "Geografía": ("geography",),
        "Historia": ("history",),
        "Matemáticas": ("mathematics",),
        "Personas": ("people",),
        "Tecnología": ("technology",),
    },
}


# ------------------------------------------------------------------------------------------------------------
# the shared label space


@dataclass(frozen=True)
class SharedClass:
    """One class of the shared label space: the source and target labels that fall into it."""

    name: str
    """The target labels joined by ' / ' (the class is named in the target's language)."""
    source_labels: tuple[str, ...]
    target_labels: tuple[str, ...]


@dataclass
class LabelSpace:
    """The classes a source and a target task share, and the labels of each side that map to nothing."""

    source: str
    target: str
    classes: list[SharedClass]
    unmapped_source: list[str] = field(default_factory=list)
    """Source labels with no target counterpart: left out of the zero-shot argmax."""
    unmapped_target: list[str] = field(default_factory=list)
    """Target labels with no source counterpart: their test examples are excluded."""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def source_groups(self, source_label_names: list[str]) -> list[list[int]]:
        """Per shared class, the indices of its source labels in `source_label_names`."""
        index = {n: i for i, n in enumerate(source_label_names)}
        return [[index[n] for n in c.source_labels] for c in self.classes]

    def target_index(self, target_label_names: list[str]) -> list[int | None]:
        """Per target label index, its shared class index (None: the label maps to no source class)."""
        where = {n: k for k, c in enumerate(self.classes) for n in c.target_labels}
        return [where.get(n) for n in target_label_names]

    def describe(self) -> str:
        """One line per shared class, `target <- source + source`, then what maps to nothing."""
        lines = [f"{c.name} <- {' + '.join(c.source_labels)}" for c in self.classes]
        if self.unmapped_source:
            lines.append(f"(no target class) <- {', '.join(self.unmapped_source)}")
        if self.unmapped_target:
            lines.append(f"{', '.join(self.unmapped_target)} <- (no source class: examples excluded)")
        return "\n".join(lines)


def pivots_of(task_name: str, label_names: list[str]) -> dict[str, tuple[str, ...]]:
    """Each label's pivots: from `TOPIC_PIVOTS` for a zoo topic task, else the label name itself."""
    table = TOPIC_PIVOTS.get(task_name)
    if table is None:
        return {n: (n.strip().casefold(),) for n in label_names}
    missing = [n for n in label_names if n not in table]
    if missing:
        raise DataError(
            f"{task_name}: topic(s) {', '.join(map(repr, missing))} have no entry in the topic map "
            f"(kdnas.data.topics.TOPIC_PIVOTS); the zoo data changed: add them to the map"
        )
    return {n: table[n] for n in label_names}


def shared_label_space(
    source: str, source_labels: list[str], target: str, target_labels: list[str]
) -> LabelSpace:
    """The connected groups of source and target labels linked by a common pivot, as shared classes.

    A group with labels on both sides is a shared class (several labels of a side merge into it); a group with
    only source labels is left out of the prediction, one with only target labels is excluded from the test.
    """
    s_piv, t_piv = pivots_of(source, source_labels), pivots_of(target, target_labels)
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for side, piv in (("s", s_piv), ("t", t_piv)):
        for label, pivots in piv.items():
            for p in pivots:
                parent[find((side, label))] = find(("p", p))
    groups: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for label in source_labels:
        groups.setdefault(find(("s", label)), ([], []))[0].append(label)
    for label in target_labels:
        groups.setdefault(find(("t", label)), ([], []))[1].append(label)
    classes, unmapped_s, unmapped_t = [], [], []
    for s_labels, t_labels in groups.values():
        if s_labels and t_labels:
            classes.append(SharedClass(" / ".join(t_labels), tuple(s_labels), tuple(t_labels)))
        else:
            unmapped_s += s_labels
            unmapped_t += t_labels
    t_order = {n: i for i, n in enumerate(target_labels)}
    classes.sort(key=lambda c: t_order[c.target_labels[0]])
    space = LabelSpace(source, target, classes, sorted(unmapped_s), sorted(unmapped_t))
    if len(classes) < 2:
        shared = f"only {classes[0].name!r}" if classes else "none"
        raise DataError(
            f"{source}{ZERO_SHOT_SEP}{target}: the label map covers {len(classes)} target class(es) ({shared}); "
            f"zero-shot transfer needs at least 2 classes in common. {target} labels: "
            f"{_short(target_labels)}; {source} labels: {_short(source_labels)}. Pair tasks on the same labels "
            f"(task files: the same label names; zoo topic tasks: {', '.join(TOPIC_PIVOTS)})"
        )
    return space


def _short(names: list[str], n: int = 12) -> str:
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "")


# ------------------------------------------------------------------------------------------------------------
# zero-shot tasks


@dataclass
class ZeroShotTask:
    """Fine-tune on `source` (train / dev, early stopping on the source's dev), test on the target's test split.

    `test` holds the target test examples whose label maps into the shared space, labeled with shared class
    indices; `source_groups[k]` lists the source classes whose logits are pooled (logsumexp) into class k.
    """

    name: str
    """`SOURCE>TARGET` with the two tasks' names (a zoo name, or a task file's stem)."""
    source: Task
    target: str
    """Name of the target task."""
    space: LabelSpace
    test: TaskSplit
    excluded: dict[str, int] = field(default_factory=dict)
    """Target test examples left out, by target label (their label maps to no source class)."""
    language: str | None = None
    """Language of the target texts."""
    kind: str = "classification"

    @property
    def label_names(self) -> list[str]:
        return self.space.names

    @property
    def num_labels(self) -> int:
        return len(self.space.classes)

    @property
    def source_groups(self) -> list[list[int]]:
        return self.space.source_groups(self.source.label_names)

    # train and dev are the source's (setting them, e.g. to cap dev, sets the source's: it is trained once)
    @property
    def train(self) -> TaskSplit:
        return self.source.train

    @train.setter
    def train(self, split: TaskSplit) -> None:
        self.source.train = split

    @property
    def dev(self) -> TaskSplit:
        return self.source.dev

    @dev.setter
    def dev(self, split: TaskSplit) -> None:
        self.source.dev = split

    @property
    def is_pair(self) -> bool:
        return self.source.is_pair

    def split(self, name: str) -> TaskSplit:
        return {"train": self.train, "dev": self.dev, "test": self.test}[name]

    def describe(self) -> str:
        ex = sum(self.excluded.values())
        return (
            f"{self.name} (zero-shot: train {len(self.train)}, dev {len(self.dev)} of {self.source.name}; test "
            f"{len(self.test)} of {self.target}, {self.num_labels} shared classes, {ex} test examples excluded)"
        )

    def summary(self) -> dict[str, object]:
        """What a result records about the transfer (JSON-ready)."""
        return {
            "source": self.source.name,
            "target": self.target,
            "classes": {c.name: list(c.source_labels) for c in self.space.classes},
            "unmapped_source": list(self.space.unmapped_source),
            "unmapped_target": list(self.space.unmapped_target),
            "excluded": dict(self.excluded),
            "n_excluded": sum(self.excluded.values()),
        }


def split_task_ref(ref: str | Path) -> tuple[str, str] | None:
    """(source, target) for a `SOURCE>TARGET` reference, None for a plain task reference (or existing path)."""
    s = str(ref)
    if ZERO_SHOT_SEP not in s or Path(s).exists():
        return None
    parts = [p.strip() for p in s.split(ZERO_SHOT_SEP)]
    if len(parts) != 2 or not all(parts):
        raise DataError(
            f"{s!r}: a zero-shot reference is SOURCE>TARGET with one '>' between two task references, "
            "e.g. wiki-vital-en>wiki-vital-fr"
        )
    src, tgt = parts
    if src == tgt or Path(src).resolve() == Path(tgt).resolve():
        raise DataError(
            f"{s!r}: source and target are the same task; list {src} itself for in-language results, or pick "
            "a target in another language (e.g. wiki-vital-en>wiki-vital-fr)"
        )
    return src, tgt


def language_of_ref(ref: str) -> str | None:
    """Language of a task reference's test texts: a zoo task's, a zero-shot ref's target's, else None."""
    try:
        parts = split_task_ref(ref)
    except DataError:
        return None
    return TASK_LANGUAGES.get(parts[1] if parts else ref)


def zero_shot_task(ref: str, source: Task, target: Task) -> ZeroShotTask:
    """Pair two loaded tasks into a zero-shot task (checks kinds, pairing and the label map)."""
    for role, t in (("source", source), ("target", target)):
        if t.kind != "classification":
            raise DataError(
                f"{ref}: the {role} {t.name} is a {t.kind} task; zero-shot transfer needs classification on "
                "both sides (labels to map); evaluate it as a plain task instead"
            )
    if source.is_pair != target.is_pair:
        pairs = source.name if source.is_pair else target.name
        raise DataError(
            f"{ref}: {pairs} has sentence pairs and the other side single texts; zero-shot needs both alike"
        )
    space = shared_label_space(source.name, source.label_names, target.name, target.label_names)
    where = space.target_index(target.label_names)
    keep = [i for i, y in enumerate(target.test.labels) if where[y] is not None]
    excluded = Counter(target.label_names[y] for y in target.test.labels if where[y] is None)
    if not keep:
        raise DataError(
            f"{ref}: none of the {len(target.test)} {target.name} test examples has a label that maps to a "
            f"{source.name} class; the shared classes are {', '.join(space.names)}"
        )
    test = target.test.subset(keep)
    mapped = [where[y] for y in test.labels]
    test.labels = [int(y) for y in mapped if y is not None]
    if excluded:
        log.info("%s: %d %s test examples excluded (labels with no %s class: %s)", ref,
                 sum(excluded.values()), target.name, source.name, ", ".join(sorted(excluded)))  # fmt: skip
    return ZeroShotTask(name=ref, source=source, target=target.name, space=space, test=test,
                        excluded=dict(sorted(excluded.items())), language=target.language)  # fmt: skip


def load_zero_shot(
    ref: str,
    *,
    cache_dir: str | Path | None = None,
    max_train: int | None = None,
    loaded: dict[str, Task] | None = None,
) -> ZeroShotTask:
    """Load `SOURCE>TARGET`: both tasks (reusing those in `loaded`, keyed by reference) and their label map."""
    parts = split_task_ref(ref)
    if parts is None:
        raise DataError(
            f"{ref!r}: not a zero-shot reference; write SOURCE>TARGET, e.g. wiki-vital-en>wiki-vital-fr"
        )
    loaded = {} if loaded is None else loaded
    tasks = []
    for role, r in zip(("source", "target"), parts):
        if r not in loaded:
            try:
                loaded[r] = load_task(r, cache_dir=cache_dir, max_train=max_train)
            except DataError as e:
                raise DataError(f"{ref}: {role} task {r}: {e}") from None
        tasks.append(loaded[r])
    # named by the tasks' names (a file's stem), like every other result column
    return zero_shot_task(f"{tasks[0].name}{ZERO_SHOT_SEP}{tasks[1].name}", tasks[0], tasks[1])
