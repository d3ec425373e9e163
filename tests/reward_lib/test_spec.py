"""Specs: the shipped ones load, and a broken one is refused naming file, line, field and expectation."""

from __future__ import annotations

import pytest

from reward_lib.errors import RewardError
from reward_lib.spec import load_spec, parse_spec
from reward_lib.store import SHIPPED

SPEC = """\
name: demo
version: 1
components:
  - signal: click
    weight: 1.0
  - signal: rating
    weight: 0.5
    range: [0, 1]
    transforms: [{normalise: [0.5, 5]}]
    when: ["click > 0"]
    fill: 3
monotone: {rating: increasing}
"""


def test_shipped_specs_load_and_round_trip_through_their_yaml():
    paths = sorted(SHIPPED.glob("*.yaml"))
    assert {path.stem for path in paths} >= {"clicks", "engagement"}
    for path in paths:
        spec = load_spec(path)
        assert spec.name == path.stem
        assert parse_spec(spec.to_yaml(), "dumped") == spec


def test_the_yaml_form_of_transforms_and_conditions_is_kept():
    spec = parse_spec(SPEC, "demo")
    rating = spec.components[1]
    assert (rating.transforms[0].kind, rating.transforms[0].limits) == ("normalise", (0.5, 5.0))
    assert (rating.when[0].signal, rating.when[0].op, rating.when[0].value) == ("click", ">", 0.0)
    assert "- normalise: [0.5, 5.0]" in spec.to_yaml() and "when: [click > 0]" in spec.to_yaml()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("signal: rating", "signal: ratin",
         "line 6, components.1.signal: unknown signal 'ratin' (did you mean 'rating'?); known signals: click,"),
        ("weight: 0.5", "weight: lots",
         "line 7, components.1.weight: Input should be a valid number, unable to parse string as a number "
         "(got 'lots')"),
        ("weight: 0.5", "weight: 2.5", "line 6, components.1: weight 2.5 is outside its declared range [0, 1]"),
        ("{normalise: [0.5, 5]}", "{sqrt: 2}",
         "line 9, components.1.transforms.0: unknown transform {'sqrt': 2}; expected log, {clip: [low, high]} or "
         "{normalise: [low, high]}"),
        ("{normalise: [0.5, 5]}", "{clip: [5, 1]}",
         "line 9, components.1.transforms.0: clip needs low < high, got [5.0, 1.0]"),
        ('"click > 0"', '"click >> 0"',
         "line 10, components.1.when.0: condition 'click >> 0' is not 'signal op number' with op one of"),
        ("rating: increasing", "event: increasing",
         "line 12, monotone: monotone names 'event', not a numeric event column (day, item, position, rating,"),
        ("version: 1\n", "", "line 1, version: Field required"),
        ("    fill: 3\n", "    fill: 3\n  - signal: click\n    weight: 2\n",
         "line 3, components: component names must be distinct: click repeated (give each a name)"),
    ],
)  # fmt: skip
def test_spec_errors_name_the_file_the_line_the_field_and_what_was_expected(tmp_path, old, new, expected):
    path = tmp_path / "demo.yaml"
    path.write_text(SPEC.replace(old, new, 1))
    with pytest.raises(RewardError) as error:
        load_spec(path)
    assert str(error.value).startswith(f"{path}: invalid reward spec:\n")
    assert expected in str(error.value)


def test_a_spec_that_is_not_yaml_or_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(RewardError, match=r"inline: not valid YAML"):
        parse_spec("name: [demo", "inline")
    with pytest.raises(RewardError, match=r"inline: expected a mapping for the reward spec, got list"):
        parse_spec("- click", "inline")
    with pytest.raises(RewardError, match=r"no such reward spec file"):
        load_spec(tmp_path / "missing.yaml")
