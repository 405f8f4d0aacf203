"""The relational toy (``verl_personadual.data.toy``, variant ``relational``): the better mode is a relation between
persona and question, not a property of either.

On the generated data: each persona word and each question word is as frequent in helpful as in misleading rows;
every persona domain is aligned with its own domain's questions and misleading on each of the seven others; and on
decisive held-out rows the project's Router and a scikit-learn logistic regression over the persona's or the
question's words are near chance (<= 60 %), while the rule "the persona's domain word is the question's" is exact.
The occupations toy (the quickstart's) fails the same measurement: its persona words give the mode away.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from verl_personadual.core.modes import Mode
from verl_personadual.data import toy
from verl_personadual.data.eval_sets import EvalRow
from verl_personadual.eval.baselines import Router

#: The better mode of each decisive kind (the module docstring's table of verl_personadual.data.toy).
BETTER = {"helpful": Mode.PERSONALIZED, "misleading": Mode.GENERAL}
QUESTION = re.compile(r"^Is \w+ a \w+ (\w+)\? The book says (?:true|false)\.$")
PERSONA = re.compile(r"^an? (\w+) \w+ who says (?:true|false)$")


def _decisive(rows: list[EvalRow]) -> tuple[list[EvalRow], list[Mode]]:
    kept = [r for r in rows if r.task in BETTER]
    return kept, [BETTER[r.task] for r in kept]


def _accuracy(predicted, labels) -> float:
    return sum(int(p) == int(y) for p, y in zip(predicted, labels)) / len(labels)


def _domain_match(row: EvalRow) -> Mode:
    """The relation, read from the prompt's text alone: personalized iff the persona's domain word is the question's
    domain word (an occupation, "a pilot", matches no domain)."""
    question, persona = QUESTION.match(row.question), PERSONA.match(row.persona or "")
    same = persona is not None and persona.group(1) == question.group(1)
    return Mode.PERSONALIZED if same else Mode.GENERAL


def separability(variant: toy.ToyVariant, tmp_path: Path) -> dict[str, float]:
    """Accuracy on the decisive rows of the 200 test items (generator seed 0, as the toy table's test set) of
    classifiers trained on the decisive rows of the toy table's calibration set (``build_calibration``, seed 1) with
    the better mode as label (what PersonaDual-SFT's forced answers give when each mode follows its rule)."""
    test_items = toy.generate(toy.ToySizes(sft=0, rl=0, rl_val=0, eval=200), 0, variant)["eval"]
    test = [EvalRow(**toy.eval_row(it)) for it in test_items]
    calibration = tmp_path / f"calibration_{variant}.jsonl"
    toy.build_calibration(calibration, [r.item_id for r in test], 200, 1, variant)
    train = [EvalRow(**json.loads(line)) for line in calibration.read_text().splitlines()]
    (train_rows, train_y), (test_rows, test_y) = _decisive(train), _decisive(test)
    out = {"router": _accuracy(Router.train(train_rows, train_y).predict(test_rows), test_y)}
    for name, text in (("persona_words", lambda r: r.persona), ("question_words", lambda r: r.question)):
        vectorizer = CountVectorizer(token_pattern=r"\w+")
        x_train = vectorizer.fit_transform([text(r) for r in train_rows])
        model = LogisticRegression(max_iter=1000).fit(x_train, [int(y) for y in train_y])
        out[name] = _accuracy(model.predict(vectorizer.transform([text(r) for r in test_rows])), test_y)
    out["domain_match"] = _accuracy([_domain_match(r) for r in test_rows], test_y)
    out["decisive_rows"] = len(test_rows)
    return out


def test_the_relational_toy_is_decided_by_the_relation_only(tmp_path: Path):
    got = separability(toy.ToyVariant.RELATIONAL, tmp_path)
    assert got["decisive_rows"] == 140  # 70 helpful + 70 misleading of the 200 test items
    assert got["domain_match"] == 1.0
    assert got["router"] <= 0.60, got
    # exactly chance: the test split's helpful and misleading rows hold the same personas and the same questions
    # (next test), so any function of the persona alone, or of the question alone, is right on exactly half of them
    assert got["persona_words"] == got["question_words"] == 0.5, got


def test_the_occupations_toy_is_given_away_by_the_persona_words(tmp_path: Path):
    got = separability(toy.ToyVariant.OCCUPATIONS, tmp_path)
    assert got["decisive_rows"] == 140 and got["domain_match"] == 1.0
    assert got["router"] == 1.0 and got["persona_words"] == 1.0, got


@pytest.fixture(scope="module")
def relational() -> dict[str, list[toy.ToyItem]]:
    """The relational toy's splits at the toy table's sizes (3,200 SFT items)."""
    return toy.generate(toy.ToySizes(sft=3200), 0, toy.ToyVariant.RELATIONAL)


@pytest.mark.parametrize("split", ["eval", "rl_val", "rl", "sft"])
def test_each_word_is_as_frequent_in_helpful_as_in_misleading_rows(relational, split):
    items = relational[split]
    helpful = [it for it in items if it.kind == toy.ToyKind.HELPFUL]
    misleading = [it for it in items if it.kind == toy.ToyKind.MISLEADING]
    assert len(helpful) == len(misleading) == {"eval": 70, "rl_val": 22, "rl": 358, "sft": 1120}[split]
    for text in (lambda it: it.persona, lambda it: it.question):
        assert Counter(w for it in helpful for w in text(it).split()) == Counter(
            w for it in misleading for w in text(it).split()
        )
    # and the whole strings: the same personas and the same questions, paired differently
    assert Counter(it.persona for it in helpful) == Counter(it.persona for it in misleading)
    assert Counter(it.question for it in helpful) == Counter(it.question for it in misleading)


def test_every_persona_domain_helps_on_its_own_domain_and_misleads_on_each_other(relational):
    splits = relational
    names = sorted(toy.RELATIONAL_DOMAINS)
    assert len(names) == 8
    for split in ("rl", "sft"):
        pairs = Counter((it.kind, PERSONA.match(it.persona).group(1), it.domain) for it in splits[split] if it.persona)
        assert {(d, q) for k, d, q in pairs if k == toy.ToyKind.MISLEADING} == {
            (d, q) for d in names for q in names if d != q
        }  # all 56 ordered pairs of two domains
        assert {(d, q) for k, d, q in pairs if k != toy.ToyKind.MISLEADING} == {(d, d) for d in names}
    ids = [it.item_id for items in splits.values() for it in items]
    assert len(ids) == len(set(ids)) == 200 + 64 + 1024 + 3200  # disjoint by prompt


def test_the_relational_toy_refuses_splits_too_small_to_pair():
    with pytest.raises(ValueError) as err:
        toy.generate(toy.ToySizes(sft=0, rl=0, rl_val=8, eval=12), 0, toy.ToyVariant.RELATIONAL)
    assert str(err.value) == (  # int(0.35 x 8) = 2 helpful items; int(0.35 x 12) = 4
        "the relational toy pairs 0 or at least 4 helpful items per split: rl_val of 8 items has 2; "
        "ask for 0 or at least 12 rl_val items"
    )
