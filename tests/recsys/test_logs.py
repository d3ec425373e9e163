"""Logging set-up: the project's INFO lines are shown, the chatty libraries' are not."""

from __future__ import annotations

import logging

from recsys.logs import configure_logging


def test_info_lines_of_the_project_are_shown_and_noisy_libraries_are_quiet(capsys):
    configure_logging()
    logging.getLogger("pipelines.steps").info("finalists: best")
    logging.info("Successfully loaded: 'fbgemm_gpu_py.so'")  # a library's chatter on the root logger
    logging.warning("a library's warning")
    shown = capsys.readouterr().err  # logs go to stderr: stdout is for results
    assert "finalists: best" in shown and "a library's warning" in shown and "fbgemm" not in shown
    assert logging.getLogger("offline_agent.evolve").isEnabledFor(logging.INFO)
    assert logging.getLogger("pipelines.steps").isEnabledFor(logging.INFO)
    assert not logging.getLogger("apache_beam.runners").isEnabledFor(logging.INFO)
    assert not logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)
    configure_logging(verbose=True)
    assert logging.getLogger("offline_agent.evolve").isEnabledFor(logging.DEBUG)


def test_beams_import_time_warnings_on_the_root_logger_are_hidden_but_its_errors_are_not(capsys):
    configure_logging()
    beam_file = "/venv/site-packages/apache_beam/io/gcp/bigquery_tools.py"
    for level, message in ((logging.WARNING, "apitools not found"), (logging.ERROR, "a Beam error")):
        logging.getLogger().handle(logging.LogRecord("root", level, beam_file, 1, message, None, None))
    shown = capsys.readouterr().err  # logs go to stderr: stdout is for results
    assert "apitools" not in shown and "a Beam error" in shown
