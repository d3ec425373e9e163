"""Measured critiques of real lists, the aggregate assessment's thresholds and the feedback signals."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from pydantic import ValidationError

from offline_agent.simulator.aggregate import (
    Assessment,
    feedback_signals,
    measured_assessment,
    simulate,
)
from offline_agent.simulator.critiques import NUMBER_WORDS, Critique, ItemVerdict, measured_critique
from offline_agent.simulator.personas import ItemFacts, Persona, ShownItem, build_personas
from recsys.sequences import UserSequences

NOIR_FAN = Persona(
    user_idx=7,
    user_id="u7",
    events=80,
    activity="medium",
    genre_taste={"Film-Noir": 0.4, "Drama": 0.3, "Crime": 0.2, "Mystery": 0.1},
    diversity=0.45,
    conformity=0.2,
    era=1955,
    era_spread=8.0,
    favourites=["Double Indemnity"],
    catalogue_genres=19,
)


def item(idx: int, genres: list[str], year: int, percentile: float) -> ShownItem:
    return ShownItem(
        item_idx=idx, title=f"film {idx}", genres=genres, year=year, popularity=10, popularity_percentile=percentile
    )


@pytest.fixture(scope="module")
def sequences(prepared_small) -> UserSequences:
    return UserSequences.from_prepared(prepared_small)


@pytest.fixture(scope="module")
def facts(prepared_small, sequences) -> ItemFacts:
    return ItemFacts.build(prepared_small, sequences)


@pytest.fixture(scope="module")
def most_popular(sequences) -> list[int]:
    return (np.argsort(-sequences.train_counts()[1:], kind="stable")[:10] + 1).tolist()


def test_an_offbeat_persona_finds_the_most_popular_list_over_weights_popularity(facts, most_popular):
    critique = measured_critique(NOIR_FAN, facts.shown(most_popular))
    assert "popularity" in critique.over_weighted
    assert len(critique.misaligned) == 10 and critique.source == "measured"
    assert critique.summary.startswith("All ten are 1990s blockbusters; I mostly watch 1950s film-noir")
    reasons = [verdict.reason for verdict in critique.misaligned]
    matrix = "a 1999 Action/Sci-Fi/Thriller blockbuster (top 1% popularity): none of my top genres; "
    assert matrix + "I mostly watch films from around 1955" in reasons
    assert all(reason.endswith("I mostly watch films from around 1955") for reason in reasons)


def test_only_the_offbeat_real_user_finds_popularity_over_weighted(prepared_small, sequences, facts, most_popular):
    personas = build_personas(prepared_small, sequences, range(sequences.num_users), facts=facts)
    offbeat = min(personas, key=lambda p: p.conformity)
    mainstream = max(personas, key=lambda p: p.conformity)
    assert "popularity" in measured_critique(offbeat, facts.shown(most_popular)).over_weighted
    assert "popularity" not in measured_critique(mainstream, facts.shown(most_popular)).over_weighted


def test_a_list_of_the_persona_s_own_genre_and_era_is_mostly_aligned(prepared_small, sequences, facts):
    persona = build_personas(prepared_small, sequences, [0], facts=facts)[0]
    top = next(iter(persona.genre_taste))
    candidates = [i for i in range(1, sequences.num_items + 1) if top in facts.genres[i]]
    closest = sorted(candidates, key=lambda i: (abs(facts.years[i] - persona.era), i))[:10]
    critique = measured_critique(persona, facts.shown(closest))
    assert len(critique.aligned) >= 8
    assert f"genre:{top}" not in critique.under_weighted
    assert all(top in verdict.reason for verdict in critique.aligned)


def test_a_list_of_one_other_genre_and_era_raises_genre_era_and_sameness():
    comedies = [item(i, ["Comedy"], 1995 + i % 4, 0.5) for i in range(1, 11)]
    critique = measured_critique(NOIR_FAN, comedies)
    assert critique.over_weighted == ["popularity", "genre:Comedy", "recency", "sameness"]
    assert critique.under_weighted == ["genre:Film-Noir", "genre:Drama", "genre:Crime"]
    reason = "Comedy from 1996: none of my top genres; I mostly watch films from around 1955"
    assert critique.misaligned[0].reason == reason
    assert critique.summary == (
        "All ten miss my taste; I mostly watch 1950s film-noir; too much Comedy; "
        "no Film-Noir or Drama or Crime at all; too many titles everyone has seen; "
        "it leans on recent releases; they are all the same kind of film."
    )


def test_a_mainstream_persona_finds_a_list_of_rarities_obscure():
    persona = dataclasses.replace(NOIR_FAN, conformity=0.9)
    rarities = [item(i, ["Film-Noir", "Drama"], 1950 + i, 0.1) for i in range(1, 11)]
    critique = measured_critique(persona, rarities)
    assert "obscurity" in critique.over_weighted and "popularity" not in critique.over_weighted
    assert len(critique.aligned) == 10
    assert critique.summary.startswith("All ten fit my taste; I mostly watch 1950s film-noir")


def test_measured_critiques_are_deterministic_and_count_in_words(facts, most_popular):
    mixed = facts.shown(most_popular[:4]) + [item(90 + i, ["Film-Noir"], 1952, 0.3) for i in range(6)]
    first, again = measured_critique(NOIR_FAN, mixed), measured_critique(NOIR_FAN, mixed)
    assert first == again
    assert first.summary.startswith("Four of ten miss my taste")
    assert first.summary.split()[0].lower() in (*NUMBER_WORDS, "all")


def test_signals_outside_the_vocabulary_are_refused_with_the_allowed_values():
    with pytest.raises(ValidationError, match="allowed: popularity, obscurity, recency, old_films"):
        Critique(
            user_idx=1,
            aligned=[],
            misaligned=[],
            over_weighted=["too_popular"],
            under_weighted=[],
            summary="",
            source="measured",
        )
    Critique(
        user_idx=1,
        aligned=[],
        misaligned=[],
        over_weighted=["genre:Film-Noir"],
        under_weighted=["sameness"],
        summary="",
        source="llm",
    )


def critique(user: int, misaligned: int, over: tuple[str, ...] = (), under: tuple[str, ...] = ()) -> Critique:
    verdicts = [ItemVerdict(item_idx=i, title=f"film {i}", reason="r") for i in range(1, 11)]
    return Critique(
        user_idx=user,
        aligned=verdicts[misaligned:],
        misaligned=verdicts[:misaligned],
        over_weighted=list(over),
        under_weighted=list(under),
        summary="s",
        source="measured",
    )


@pytest.mark.parametrize(
    ("misaligned", "raising", "status"),
    [
        (7, 0, "CRITICAL"),
        (6, 5, "NEEDS_IMPROVEMENT"),
        (4, 0, "NEEDS_IMPROVEMENT"),
        (3, 2, "STABLE"),
        (0, 6, "CRITICAL"),
        (0, 3, "NEEDS_IMPROVEMENT"),
        (0, 2, "STABLE"),
    ],
)
def test_the_assessment_status_follows_the_thresholds(misaligned, raising, status):
    critiques = [critique(u, misaligned, ("popularity",) if u < raising else ()) for u in range(10)]
    assert measured_assessment(critiques).status == status


def test_failure_modes_are_sorted_by_share_and_tracked_from_thirty_percent():
    critiques = [
        critique(0, 2, ("popularity", "sameness"), ("genre:Drama",)),
        critique(1, 4, ("popularity",)),
        critique(2, 0, ("popularity", "sameness")),
        critique(3, 0),
    ]
    assessment = measured_assessment(critiques)
    assert [(m.name, m.share) for m in assessment.failure_modes] == [
        ("popularity over-weighted", 0.75),
        ("sameness over-weighted", 0.5),
        ("genre:Drama under-weighted", 0.25),
        ("misaligned items", pytest.approx(0.15)),
    ]
    assert (
        assessment.failure_modes[0].description
        == "three of four users say their list over-weights blockbusters everyone has seen"
    )
    assert assessment.signals_to_track == ["popularity", "sameness"]
    assert assessment.status == "CRITICAL" and assessment.source == "measured"


def test_feedback_signals_are_shares_of_users():
    critiques = [
        critique(0, 10, ("popularity", "genre:Action", "recency")),
        critique(1, 5, ("sameness",), ("genre:Drama",)),
        critique(2, 0, ("obscurity", "old_films", "diversity")),
        critique(3, 0, ("diversity",)),
    ]
    signals = feedback_signals(critiques)
    assert signals == {
        "popularity_bias": 0.25,
        "obscure_lists": 0.25,
        "low_diversity": 0.25,
        "scattered_lists": 0.5,
        "genre_calibration": 0.5,
        "era_mismatch": 0.5,
    }
    empty = feedback_signals([])
    assert set(empty.values()) == {0.0}


def test_measured_complaints_of_obscure_and_scattered_lists_count_in_the_feedback_signals():
    mainstream = dataclasses.replace(NOIR_FAN, conformity=0.9)
    genres = [
        "Action",
        "Animation",
        "Children",
        "Comedy",
        "Documentary",
        "Horror",
        "Musical",
        "Sci-Fi",
        "War",
        "Western",
    ]
    scattered_rarities = [item(i, [genre], 1950 + i, 0.1) for i, genre in enumerate(genres, start=1)]
    fitting = [item(i, ["Film-Noir", "Drama", "Crime"], 1950 + i, 0.9) for i in range(11, 21)]
    raised = measured_critique(mainstream, scattered_rarities)
    assert {"obscurity", "diversity"} <= set(raised.over_weighted)
    calm = measured_critique(mainstream, fitting)
    assert not {"obscurity", "diversity"} & set(calm.over_weighted)
    signals = feedback_signals([raised, calm, calm, calm])
    assert signals["obscure_lists"] == signals["scattered_lists"] == 0.25


def test_simulate_critiques_every_listed_user_and_reports_in_json_and_markdown(prepared_small, sequences, most_popular):
    lists = {u: most_popular for u in range(0, 60, 5)}
    feedback = simulate(prepared_small, sequences, lists)
    assert [p.user_idx for p in feedback.personas] == sorted(lists) == [c.user_idx for c in feedback.critiques]
    assert feedback.failures == [] and isinstance(feedback.assessment, Assessment)
    assert all(0 <= value <= 1 for value in feedback.signals.values())
    assert feedback.signals["popularity_bias"] > 0.5 and feedback.assessment.status == "CRITICAL"
    encoded = json.loads(json.dumps(feedback.to_json()))
    assert encoded["assessment"]["status"] == "CRITICAL" and len(encoded["critiques"]) == len(lists)
    markdown = feedback.to_markdown()
    assert markdown.startswith("**Status: CRITICAL** (measured)")
    assert markdown.count("\n- user ") == 5 and feedback.critiques[0].summary in markdown
