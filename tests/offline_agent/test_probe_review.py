"""Co-evolved probes earn their place: an added probe whose signal is nearly collinear with an earlier probe's
over the run's candidates is dropped and stops counting; one that adds information is kept; the evolution loop
records both verdicts and checks each targeted edit against its parent's flagged signals."""

from __future__ import annotations

import numpy as np

from offline_agent.evaluator import EvaluationConfig, EvaluationOutcome
from offline_agent.evolve import Evolution, EvolutionConfig, FeedbackConfig
from offline_agent.probe_review import COLLINEAR, MIN_CANDIDATES, dropped, review_probes
from offline_agent.program_db import DatabaseConfig, Program
from offline_agent.records import Feedback
from offline_agent.report import probe_section

RNG = np.random.default_rng(0)
CALIBRATION = [0.1, 0.5, 0.3, 0.9, 0.2, 0.7, 0.4, 0.8, 0.6, 0.35]  # the built-in genre_calibration signal per candidate
UNRELATED = RNG.permutation(CALIBRATION).tolist()


def _finding(probe: str, measures: str, signal: float, source: str) -> dict[str, object]:
    return {"probe": probe, "measures": measures, "values": {"value": signal}, "signal": signal,
            "severity": "none", "interpretation": "", "source": source}  # fmt: skip


def _diagnosis(index: int, added: dict[str, float]) -> dict[str, object]:
    findings = [_finding("genre_calibration", "genre_calibration", CALIBRATION[index], "builtin")]
    findings += [_finding(name, "scattered_lists", signal, "candidate") for name, signal in added.items()]
    verified = [
        {"probe": name, "measures": "scattered_lists", "verified": True, "reason": "separates"} for name in added
    ]
    return {"findings": findings, "verifications": verified, "failures": [], "lists": {}, "seconds": 0.0}


def _programs(count: int, added: dict[str, list[float]]) -> list[Program]:
    return [
        Program(f"k{i}@0", f"k{i}", 0, None, i, i, "proposed", {}, "evaluated", 0.05, {},
                Feedback(diagnosis=_diagnosis(i, {name: values[i] for name, values in added.items()})))
        for i in range(count)
    ]  # fmt: skip


def test_a_probe_collinear_with_an_earlier_one_is_dropped_and_an_informative_one_kept():
    echo = [0.02 + 0.9 * c for c in CALIBRATION]  # a rescaled copy of genre_calibration
    verdicts = {v.probe: v for v in review_probes(_programs(MIN_CANDIDATES, {"echo": echo, "fresh": UNRELATED}))}
    assert verdicts["echo"].status == "dropped" and "genre_calibration" in verdicts["echo"].reason
    assert "r +1.000 over 8 candidates" in verdicts["echo"].reason
    assert verdicts["fresh"].status == "kept" and verdicts["fresh"].candidates == MIN_CANDIDATES
    assert abs(np.corrcoef(UNRELATED[:MIN_CANDIDATES], CALIBRATION[:MIN_CANDIDATES])[0, 1]) < COLLINEAR
    assert dropped(verdicts.values()) == {"echo"}
    table = "\n".join(probe_section(_programs(MIN_CANDIDATES, {"echo": echo})))
    assert "| echo | scattered_lists | `k0@0` | dropped | 8 |" in table


def test_a_probe_is_on_trial_until_measured_on_enough_candidates_and_a_never_verified_one_is_dropped():
    echo = [0.02 + 0.9 * c for c in CALIBRATION]
    (early,) = review_probes(_programs(MIN_CANDIDATES - 1, {"echo": echo}))
    assert early.status == "on trial" and early.candidates == MIN_CANDIDATES - 1
    failed = {"probe": "noise", "measures": "scattered_lists", "verified": False, "reason": "does not separate"}
    diagnosis = {**_diagnosis(0, {}), "verifications": [failed]}
    unverified = Program("k0@0", "k0", 0, None, 0, 0, "proposed", {}, "evaluated", 0, {}, Feedback(diagnosis=diagnosis))
    (verdict,) = review_probes([unverified])
    assert (verdict.probe, verdict.status, verdict.reason) == ("noise", "dropped", "does not separate")


def test_the_loop_stops_counting_a_dropped_probe_and_checks_each_targeted_edit(tmp_path, prepared_small, seeds_dir):
    config = EvolutionConfig(
        seed_candidate=str(seeds_dir / "sasrec_bce"), run_dir=str(tmp_path / "run"), iterations=0,
        database=DatabaseConfig(islands=1), feedback=FeedbackConfig(mode="scalar", personas=0),
        evaluation=EvaluationConfig(dataset=""),
    )  # fmt: skip
    evolution = Evolution(config, prepared_small.path)
    assert evolution.evaluation.diagnose  # the scalar arm measures what it hides, to be checked alike
    (parent,) = evolution.start()
    echo = [0.02 + 0.9 * c for c in CALIBRATION]

    def outcome(index: int) -> EvaluationOutcome:
        return EvaluationOutcome("evaluated", "train", None, valid={"ndcg@10": 0.05}, test={"ndcg@10": 0.05},
                                 diagnosis=_diagnosis(index, {"echo": echo[index]}))  # fmt: skip

    parent = evolution.record(parent, outcome(0))
    for index in range(1, MIN_CANDIDATES + 2):
        blocks = {**parent.blocks, "loss": parent.blocks["loss"] + f"\n# variant {index}\n"}
        proposed = Feedback(rule="genre_side_features", rationale="Rule genre_side_features")
        child = evolution.db.add(blocks, f"h{index}", parent, index, feedback=proposed)
        assert child is not None
        stored = evolution.record(child, outcome(index))
        counted = "scattered_lists" in stored.feedback.signals
        assert counted == (index < MIN_CANDIDATES), index  # dropped once judged on 8 candidates before it
        checks = stored.feedback.feedback_checks
        flagged = parent.feedback.signals["genre_calibration"] >= 0.25
        assert [c.signal for c in checks] == (["genre_calibration"] if flagged else [])
        assert all(c.fixed == (c.child <= c.parent - 0.02) for c in checks if c.child is not None)
        parent = stored
