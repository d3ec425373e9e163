"""Secret values are redacted by value wherever they appear: texts, JSON, logs, reports."""

from __future__ import annotations

import logging

import pytest

from recsys.logs import configure_logging
from recsys.redaction import MIN_LENGTH, redact, redact_json, remember
from recsys.reports import write_report_files

KEY = "AIzaSy-0123456789abcdef-key"


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    return KEY


def test_a_value_is_redacted_under_any_name_or_none(secret):
    leak = f"environ({{'X': '{secret}'}}) and again {secret}\0PATH=/usr/bin"
    assert (
        redact(leak)
        == "environ({'X': '[REDACTED $GEMINI_API_KEY]'}) and again [REDACTED $GEMINI_API_KEY]\0PATH=/usr/bin"
    )


def test_short_values_and_ordinary_variables_are_left_alone(monkeypatch):
    monkeypatch.setenv("AUTH_MODE", "x" * (MIN_LENGTH - 1))
    monkeypatch.setenv("EVOREC_DATA_DIR", "/srv/evorec-data-dir")
    text = f"mode {'x' * (MIN_LENGTH - 1)} in /srv/evorec-data-dir"
    assert redact(text) == text


def test_a_variable_a_config_names_is_redacted_whatever_its_name(monkeypatch):
    monkeypatch.setenv("LLM_ENDPOINT_PASS", "opaque-value-91b2c3")  # no secret-looking name
    assert redact("got opaque-value-91b2c3") == "got opaque-value-91b2c3"
    assert remember("LLM_ENDPOINT_PASS") == "opaque-value-91b2c3"
    assert redact("got opaque-value-91b2c3") == "got [REDACTED $LLM_ENDPOINT_PASS]"
    assert remember("UNSET_VARIABLE_FOR_THIS_TEST") is None


def test_a_text_cut_through_a_value_loses_the_piece_at_either_end(secret):
    assert redact("tail: " + secret[:12]) == "tail: [REDACTED $GEMINI_API_KEY]"
    assert redact(secret[-10:] + " was the rest") == "[REDACTED $GEMINI_API_KEY] was the rest"
    assert redact("ends with " + secret[: MIN_LENGTH - 1]) == "ends with " + secret[: MIN_LENGTH - 1]


def test_a_value_inside_another_is_replaced_whole(monkeypatch):
    monkeypatch.setenv("OUTER_TOKEN", "prefix-inner-secret-value-suffix")
    monkeypatch.setenv("INNER_TOKEN", "inner-secret-value")
    assert redact("prefix-inner-secret-value-suffix") == "[REDACTED $OUTER_TOKEN]"
    assert redact("just inner-secret-value") == "just [REDACTED $INNER_TOKEN]"


def test_json_is_redacted_in_keys_values_and_nested_lists(secret):
    data = {"reason": f"crashed: {secret}", secret: [1.5, (secret, None)], "n": 3}
    assert redact_json(data) == {
        "reason": "crashed: [REDACTED $GEMINI_API_KEY]",
        "[REDACTED $GEMINI_API_KEY]": [1.5, ("[REDACTED $GEMINI_API_KEY]", None)],
        "n": 3,
    }


def test_log_records_and_their_tracebacks_are_redacted(secret, capsys):
    configure_logging()
    log = logging.getLogger("offline_agent.evolve")
    log.info("rejected: %s", f"the reply echoed {secret}")
    try:
        raise RuntimeError(f"environ: {secret}")
    except RuntimeError:
        log.exception("failed")
    shown = capsys.readouterr().err  # logs go to stderr: stdout is for results
    assert secret not in shown and shown.count("[REDACTED $GEMINI_API_KEY]") == 2 and "RuntimeError" in shown


def test_reports_are_redacted(secret, tmp_path):
    paths = write_report_files(tmp_path / "report", "Report", f"# Report\n\n- failed: {secret}\n")
    for path in paths.values():
        text = path.read_text()
        assert secret not in text and "[REDACTED $GEMINI_API_KEY]" in text


def test_a_value_once_seen_stays_redacted_after_its_variable_is_unset(monkeypatch):
    monkeypatch.setenv("SHORT_LIVED_TOKEN", "tok-5e6f7a8b9c0d")
    assert redact("x tok-5e6f7a8b9c0d") == "x [REDACTED $SHORT_LIVED_TOKEN]"
    monkeypatch.delenv("SHORT_LIVED_TOKEN")
    assert redact("x tok-5e6f7a8b9c0d") == "x [REDACTED $SHORT_LIVED_TOKEN]"
