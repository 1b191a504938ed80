"""The built-in verifiers: every hard-negative kind is vetoed with a readable reason, rewordings
that keep the facts pass, the rules are fast, the learned stage's weights are documented and
reproducible, and a user's CrossEncoder plugs in."""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from semcache.verifiers import (
    CHECKS,
    DEFAULT_CHECKS,
    CrossEncoderVerifier,
    LearnedVerifier,
    RuleVerifier,
    default_verifier,
)
from semcache.verifiers.base import Chain, Verdict, Verifier
from semcache.verifiers.features import FEATURES
from semcache.verifiers.learned import load_weights
from semcache.verifiers.lexicon import derived
from semcache.verifiers.structure import main_clause
from semcache.verifiers.text import analyze
from semcache.verifiers.training import SIGNS, train

PAIRS = Path(__file__).resolve().parent.parent / "data" / "pairs" / "pairs.jsonl"

# The table of issue 3: (query, cached prompt, must be served).
ISSUE_TABLE = [
    ("How do I reset my password?", "How can I reset my password?", True),
    ("What is the capital of France?", "what's the capital of france", True),
    ("Book a flight from Paris to Rome", "Book a flight from Rome to Paris", False),
    ("Extract the order: order #1234 for $50", "Extract the order: order #1235 for $50", False),
    ("Is the store open on Sunday?", "Is the store closed on Sunday?", False),
    (
        "Classify the sentiment: I love this phone",
        "Classify the sentiment: I hate this phone",
        False,
    ),
]  # fmt: skip

# One or more look-alikes per hard-negative kind, with the check expected to catch it.
HARD_NEGATIVES = [
    ("number", "Book a table for 4 people at 7pm.", "Book a table for 5 people at 7pm."),
    ("number", "Refund $49.99 for the kettle.", "Refund $45.99 for the kettle."),
    ("number", "Extract: 3 cups of flour and 2 eggs.", "Extract: 3 cups of flour and eggs."),
    ("identifier", "Where is order A-10578?", "Where is order A-10587?"),
    ("identifier", "Email the invoice to maria.lopez@example.com", "Email the invoice to mario.lopez@example.com"),
    ("identifier", "The app crashes since version 2.4.1", "The app crashes since version 2.4.2"),
    ("identifier", "Contact: Tom, tom@acme.io, +1 415 555 0134", "Contact: Tom, +1 415 555 0134"),
    ("date", "Schedule the call on Monday at 3pm", "Schedule the call on Tuesday at 3pm"),
    ("date", "Is the library open on Sunday?", "Is the library open?"),
    ("date", "I need it today", "I need it tomorrow"),
    ("negation", "The parcel was delivered.", "The parcel was not delivered."),
    ("negation", "I want a refund", "I don't want a refund"),
    ("negation", "Book a room with breakfast", "Book a room without breakfast"),
    ("antonym", "Please enable two-factor authentication", "Please disable two-factor authentication"),
    ("antonym", "Block my debit card", "Unblock my debit card"),
    ("antonym", "User jdoe logged in from 10.0.0.2", "User jdoe logged out from 10.0.0.2"),
    ("antonym", "Shares of Acme rose 3% on Friday", "Shares of Acme fell 3% on Friday"),
    ("question", "When was the Red Cross founded?", "Where was the Red Cross founded?"),
    ("question", "How much does shipping to Spain cost?", "How long does shipping to Spain take?"),
    ("question", "Is the museum open on Monday?", "Why is the museum open on Monday?"),
    ("swap", "Alice paid Bob $20", "Bob paid Alice $20"),
    ("swap", "Translate this from English to French", "Translate this from French to English"),
    ("unit", "Convert 5 miles to kilometers", "Convert 5 kilometers to miles"),
    ("swap", "Is Spain bigger than Chile?", "Is Chile bigger than Spain?"),
    ("swap", "Paris\nRome\n2025-06-01", "Rome\nParis\n2025-06-01"),
    ("substitution", "What is the capital of France?", "What is the capital of Spain?"),
    ("substitution", "Does the smart watch support sleep tracking?", "Does the fitness tracker support sleep tracking?"),
    ("unit", "Send me 50 EUR", "Send me 50 USD"),
    # Patterns from the SICK train split (contradictions and role changes the cosine scores 0.91+).
    ("swap", "The log is lying on the panda bear", "The panda bear is lying on the logs"),
    ("swap", "The military officer is barking at the recruits", "The recruits are barking at the military officer"),
    ("antonym", "A man on a bike is jumping on a ramp", "A man on a bike is jumping off a ramp"),
    ("role", "A horse and its rider are leaping over a barrier", "The horse is leaping over the rider at the barrier"),
    ("role", "A dog is chasing a ball on the grass", "A dog with a ball is being chased in the grass"),
]  # fmt: skip

# Rewordings that keep every fact: casing, punctuation, contractions, greetings, word order.
PARAPHRASES = [
    ("Where is my order A-10578?", "where's order a-10578"),
    ("I do not want a refund.", "i don't want a refund"),
    ("Schedule a meeting with Maria on March 3 at 4pm.", "Can you set up a meeting with Maria on March 3 at 4pm?"),
    ("Book a flight from Paris to Rome on May 5.", "Can you book a flight to Rome from Paris on May 5?"),
    ("Invoice INV-2025-0042 is due on 2025-05-14.", "Invoice inv-2025-0042 is due May 14, 2025"),
    ("Refund of $1,250.00 for order A-10001", "refund of $1250 for order A-10001 please"),
    ("Hi! How long does shipping to Kenya take?", "How long does shipping to Kenya take? Thanks"),
    ("What time does the pharmacy open on Sunday?", "When does the pharmacy open on Sunday?"),
    ("It isn't working and I can't log in", "It is not working and I cannot log in"),
    ("Compare Python and Java", "Compare Java and Python"),
    ("Who founded IKEA?", "Who started IKEA?"),
    # Another question word, the same request: the question check is opt-in for these.
    ("How do I apply for a parking permit?", "What is the procedure for applying for a parking permit?"),
    ("Where can I download my invoices?", "How can I download my invoices?"),
    ("The lady is slicing an onion", "The woman is slicing an onion"),
    # A passive rewording keeps who does what; words only moved or added are no substitution.
    ("A man is riding a horse", "A horse is being ridden by a man"),
    ("two puppies playing around in the grass", "Two puppies play in the grass"),
    ("The snowboarder is jumping off a snow covered hill", "The snowboarder is jumping off a snowy hill"),
    ("The search was concentrated in northeast Pennsylvania", "The search was concentrated in northeastern Pennsylvania"),
    ("A gray cat with green eyes looks at the camera", "A grey cat with green eyes looks at the camera"),
    # Without a direct object, the passive says the same: no voice veto.
    ("My refund is still processing for order A-10001", "My refund is still being processed for order A-10001"),
    # A word on both sides of the verb, and reported speech, have no single role to compare.
    ("A rabbit is playing with a stuffed bunny", "A bunny is playing with a stuffed bunny"),
    ("Investigators were searching his home, a prosecutor said.", "A prosecutor said investigators were searching his home."),
    # "note" and "not" are two words to the swap check (a full stem made them one).
    ("The doorbell doesn't work, so could you add a note to order A-12720 asking the courier to knock?",
     "Is it possible to add a note for the courier to order A-12720? The doorbell doesn't work, so they should knock."),
]  # fmt: skip


@pytest.fixture(scope="module")
def rules() -> RuleVerifier:
    return RuleVerifier()


@pytest.fixture(scope="module")
def every_check() -> RuleVerifier:
    """Each check on every candidate, opt-in ones included (the default leaves some out)."""
    return RuleVerifier(checks=CHECKS, substitution_below=None)


@pytest.mark.parametrize(("query", "candidate", "served"), ISSUE_TABLE)
def test_issue_table(rules: RuleVerifier, query: str, candidate: str, served: bool) -> None:
    assert rules.verify(query, candidate, 0.95).accept is served


@pytest.mark.parametrize(("check", "query", "candidate"), HARD_NEGATIVES)
def test_hard_negatives_are_vetoed_by_their_check(
    every_check: RuleVerifier, check: str, query: str, candidate: str
) -> None:
    verdict = every_check.verify(query, candidate, 0.95)
    assert not verdict.accept
    assert verdict.stage == f"rules.{check}", verdict
    assert verdict.reason
    # The same veto whichever text is the query.
    assert not every_check.verify(candidate, query, 0.95).accept


@pytest.mark.parametrize(("query", "candidate"), PARAPHRASES)
def test_paraphrases_are_accepted(rules: RuleVerifier, query: str, candidate: str) -> None:
    assert rules.verify(query, candidate, 0.9) == Verdict(True)
    assert rules.verify(candidate, query, 0.9).accept


def test_reasons_name_the_difference(rules: RuleVerifier) -> None:
    order = rules.verify("Where is order A-10578?", "Where is order A-10587?", 0.99)
    assert order.reason == "identifier differs: A-10578 vs A-10587"
    number = rules.verify("order #1234 for $50", "order #1235 for $50", 0.97)
    assert number.reason == "number differs: 1234 vs 1235"
    missing = rules.verify("order #1234 for $50", "order #1234", 0.97)
    assert missing.reason == "number only in the query: 50"
    assert "open vs closed" in rules.verify("Is it open?", "Is it closed?", 0.9).reason
    assert "'not'" in rules.verify("It works", "It does not work", 0.9).reason


def test_every_kind_in_our_labeled_pairs_is_mostly_vetoed(rules: RuleVerifier) -> None:
    """On the held-out families of data/pairs: the rules catch nearly every hard negative of each
    kind and veto few paraphrases (a floor, so a regression shows up here before the benchmark)."""
    rows = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines()]
    test = [r for r in rows if r["split"] == "test"]
    totals = Counter(r["kind"] for r in test)
    vetoed = Counter(r["kind"] for r in test if not rules.verify(r["a"], r["b"], 0.85).accept)
    # The question check is opt-in (it pays only on these templates): with it, they are caught.
    asking = RuleVerifier(checks=(*DEFAULT_CHECKS, "question"))
    question_word = [r for r in test if r["kind"] == "question_word"]
    caught = sum(not asking.verify(r["a"], r["b"], 0.85).accept for r in question_word)
    assert question_word and caught / len(question_word) > 0.9
    for kind, total in totals.items():
        rate = vetoed[kind] / total
        if kind == "question_word":
            continue
        if kind == "paraphrase":
            assert rate < 0.1, f"paraphrases vetoed: {rate:.1%}"
        elif kind in ("entity_swap", "unrelated_close"):
            assert rate > 0.6, f"{kind} vetoed: {rate:.1%}"
        else:
            assert rate > 0.9, f"{kind} vetoed: {rate:.1%}"


def test_default_verifier_and_configuration() -> None:
    verifier = default_verifier()
    assert isinstance(verifier, RuleVerifier) and isinstance(verifier, Verifier)
    assert verifier.checks == DEFAULT_CHECKS and "insertion" in CHECKS
    with pytest.raises(ValueError, match="unknown checks"):
        RuleVerifier(checks=["number", "vibes"])
    numbers_only = RuleVerifier(checks=["number"])
    assert numbers_only.verify("Is it open?", "Is it closed?", 0.9).accept
    extra = RuleVerifier(checks=(*DEFAULT_CHECKS, "insertion"))
    query = "The kettle from order A-10290 arrived with a cracked lid."
    added = extra.verify(query, query + " Urgent!", 0.95)
    assert added.stage == "rules.insertion"
    # Synonym swaps the embedding scores very close can be left to it.
    gated = RuleVerifier(substitution_below=0.9)
    assert gated.verify("A man is cutting a rope", "A man is cutting a cord", 0.93).accept
    assert not gated.verify("A man is cutting a rope", "A man is cutting a cord", 0.85).accept
    assert len(verifier.explain("Is order A-1 open?", "Is order A-2 closed?")) == 2


def test_rules_chain_with_other_verifiers() -> None:
    class Never:
        name = "never"

        def verify(self, query: str, candidate: str, similarity: float) -> Verdict:
            return Verdict(False, "no")

    chain = Chain([RuleVerifier(), Never()])
    assert chain.verify("a 1", "a 2", 0.9).stage == "rules.number"
    assert chain.verify("same", "same!", 0.9) == Verdict(False, "no", "never")


def test_main_clause_and_derived_forms() -> None:
    clause = main_clause(analyze("The panda bear is lying on the logs").tokens)
    assert clause is not None and clause.shown == "lying" and not clause.passive
    assert {"panda", "bear"} <= clause.before and "log" in clause.after
    passive = main_clause(analyze("A ball is being chased by a dog").tokens)
    assert passive is not None and passive.passive and passive.shown == "chased"
    assert main_clause(analyze("The store is open on Sunday").tokens) is None  # not a verb
    assert main_clause(analyze("Kaye said the guard is lying").tokens) is None  # reported
    assert derived("snow", "snowy") and derived("terrorism", "terror")
    assert not derived("play", "player") and not derived("cat", "caty")


# -- LearnedVerifier --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def learned() -> LearnedVerifier:
    return LearnedVerifier()


def test_learned_weights_file_documents_its_training() -> None:
    model = load_weights()
    assert model["features"] == list(FEATURES)
    assert len(model["weights"]) == len(model["mean"]) == len(model["scale"]) == len(FEATURES)
    training = model["training"]
    assert training["data"] == "data/pairs/pairs.jsonl" and training["split"].startswith("train")
    assert training["command"] == "python -m semcache.verifiers.training"
    for key in ("date", "embedder", "rules_sha256", "cross_validation", "rows"):
        assert training[key], key
    # Trained on the data file as it is now: if pairs.jsonl changes, retrain (about 30 s).
    assert training["data_sha256"] == hashlib.sha256(PAIRS.read_bytes()).hexdigest(), (
        "data/pairs changed since the learned verifier was trained: "
        "run python -m semcache.verifiers.training"
    )
    # The fit respected the prior: no difference feature raises p(same), no similarity lowers it.
    for name, weight in zip(model["features"], model["weights"], strict=True):
        assert weight * SIGNS[name] >= 0, name
    assert 0 < model["min_probability"] < 1


def test_learned_verifier_vetoes_a_reworded_request_about_another_city(
    learned: LearnedVerifier,
) -> None:
    query = "New delivery address for order A-15534: 221 Oak Avenue, Athens 21191"
    other = "Can you send order A-15534 to 221 Oak Avenue, Seoul 21191? Extract the new address."
    same = "Can you send order A-15534 to 221 Oak Avenue, Athens 21191? Extract the new address."
    assert RuleVerifier().verify(query, other, 0.71).accept  # the rules see a rewording
    verdict = learned.verify(query, other, 0.71)
    assert not verdict.accept and verdict.stage == "learned"
    assert verdict.reason.startswith("learned: p(same)") and "names" in verdict.reason
    assert learned.verify(query, same, 0.9).accept
    assert learned.verify(
        "How do I reset my password?", "How can I reset my password?", 0.95
    ).accept
    # Symmetric: the verdict does not depend on which text is the query.
    assert learned.probability(query, other, 0.71) == pytest.approx(
        learned.probability(other, query, 0.71)
    )
    assert LearnedVerifier(min_probability=0.0).verify(query, other, 0.71).accept
    chain = Chain([RuleVerifier(), learned])
    assert chain.name == "rules+learned" and isinstance(learned, Verifier)
    assert chain.verify(query, other, 0.71).stage == "learned"


def test_learned_verifier_refuses_weights_for_other_features(tmp_path: Path) -> None:
    model = dict(load_weights(), features=["cosine"])
    with pytest.raises(ValueError, match="other features"):
        LearnedVerifier(model)
    with pytest.raises(FileNotFoundError, match=r"semcache\.verifiers\.training"):
        LearnedVerifier(tmp_path / "missing.json")
    stale = tmp_path / "old.json"
    stale.write_text(json.dumps(dict(load_weights(), format=0)), encoding="utf-8")
    with pytest.raises(ValueError, match="format"):
        load_weights(stale)


def test_training_is_deterministic_and_keeps_the_signs() -> None:
    rows = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["split"] == "train"][::4]
    # Similarities are an input (the embedder is not needed to test the fit): made-up values
    # that leave the negatives and positives overlapping.
    sims = [0.75 + 0.2 * ((i * 7919) % 100) / 100 for i in range(len(rows))]
    first, second = train(rows, sims), train(rows, sims)
    assert first == second
    assert first["training"]["negatives"] > 0 and first["training"]["positives"] > 0
    for name, weight in zip(first["features"], first["weights"], strict=True):
        assert weight * SIGNS[name] >= 0, name
    LearnedVerifier(first)  # a trained dict is a valid weights file


# -- CrossEncoderVerifier -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 1-layer BERT cross-encoder built offline on the bundled model's tokenizer. Its weights are
    random except the classifier, which we set, so the score is known: sigmoid(bias)."""
    import torch
    import transformers
    from sentence_transformers import CrossEncoder

    from semcache.embedding import bundled_model_path

    folder = tmp_path_factory.mktemp("cross-encoder")
    tokenizer = transformers.AutoTokenizer.from_pretrained(bundled_model_path())
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=1,
    )
    model = transformers.BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(2.0)  # sigmoid(2.0) = 0.881 for every pair
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return CrossEncoder(str(folder), device="cpu")


def test_cross_encoder_verifier_scores_and_vetoes(tiny_cross_encoder: Any) -> None:
    lenient = CrossEncoderVerifier(tiny_cross_encoder, min_score=0.8)
    assert lenient.score("a", "b") == pytest.approx(0.881, abs=1e-3)
    assert lenient.verify("a", "b", 0.9).accept
    strict = CrossEncoderVerifier(tiny_cross_encoder, min_score=0.9)
    verdict = strict.verify("a", "b", 0.9)
    assert not verdict.accept
    assert verdict.stage == "cross-encoder" and "0.881 < 0.9" in verdict.reason
    assert isinstance(strict, Verifier)


def test_cross_encoder_verifier_by_name_and_with_several_outputs(
    tiny_cross_encoder: Any, tmp_path: Path
) -> None:
    folder = Path(tiny_cross_encoder.model.name_or_path)
    by_name = CrossEncoderVerifier(str(folder), min_score=0.5)
    assert by_name.verify("a", "b", 0.9).accept

    labels = {0: "contradiction", 1: "entailment", 2: "neutral"}

    class ThreeWay:  # an NLI model's shape: one logit per label
        model = SimpleNamespace(config=SimpleNamespace(id2label=labels))

        def predict(self, pairs: list[tuple[str, str]], **kwargs: Any) -> list[list[float]]:
            return [[0.0, 3.0, 0.0]]

    nli = CrossEncoderVerifier(ThreeWay(), positive_label="entailment", min_score=0.5)
    assert nli.score("a", "b") == pytest.approx(0.909, abs=1e-3)
    with pytest.raises(ValueError, match="positive_label"):
        CrossEncoderVerifier(ThreeWay()).score("a", "b")
    with pytest.raises(TypeError, match="CrossEncoder"):
        CrossEncoderVerifier(object())


def test_cross_encoder_verifier_names_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match="sentence-transformers"):
        CrossEncoderVerifier("some/cross-encoder")


def test_the_default_checks_substitutions_below_090_only_and_leaves_role_out(
    rules: RuleVerifier,
) -> None:
    watch = "Does the smart watch support sleep tracking?"
    tracker = "Does the fitness tracker support sleep tracking?"
    assert rules.verify(watch, tracker, 0.89).stage == "rules.substitution"
    assert rules.verify(watch, tracker, 0.90).accept  # at 0.90 and up, likely a synonym
    assert "role" not in rules.checks and "insertion" not in rules.checks
    horse = (
        "A horse and its rider are leaping over a barrier",
        "The horse is leaping over the rider at the barrier",
    )
    assert rules.verify(*horse, 0.95).accept
    assert RuleVerifier(checks=(*rules.checks, "role")).verify(*horse, 0.95).stage == "rules.role"
