"""Beam runner configurations: a YAML file naming a runner and its options, turned into Beam flags.

A cluster's options (Flink master and worker environment; Dataflow project, region, buckets and
worker image) are many and change rarely, so they live in a reviewed file (``infra/beam/*.yaml``)
passed as ``evorec data prepare --beam-config FILE``. Every option name and value is checked
against Beam's own parser when the file is loaded: Beam itself drops an unknown option with a
warning, and a typo in a cluster address would otherwise surface only as a job on the wrong runner.

Runners: FnApiRunner (here), DaskRunner (a ``dask.distributed`` cluster), FlinkRunner,
DataflowRunner. Example::

    runner: FlinkRunner
    options:
      flink_master: http://flink-jobmanager:8081
      flink_submit_uber_jar: true     # a flag: true switches it on
      parallelism: 4
      experiments: [use_deprecated_read]   # a list repeats the flag
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

from recsys.config_files import load_yaml_model
from recsys.errors import ConfigError

DEFAULT_RUNNER = "FnApiRunner"
# Runners Beam does not know by a short name: the class to pass as --runner.
RUNNER_CLASSES = {"DaskRunner": "recsys.data.dask_runner.DaskRunner"}  # Beam's, with a defect fixed
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
OPTION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class BeamRunnerConfig(BaseModel):
    """A runner and its pipeline options, as Beam's command-line flags name them (without ``--``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runner: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$", description="e.g. FlinkRunner")]
    options: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _flag_shaped(cls, options: dict[str, Scalar | list[Scalar]]) -> dict[str, Scalar | list[Scalar]]:
        for name, value in options.items():
            if not OPTION_NAME.match(name):
                raise ValueError(f"{name!r}: an option name is lower_snake_case, without the leading --")
            if name == "runner":
                raise ValueError("'runner' is the file's top-level key, not an option")
            if value is False or (isinstance(value, list) and False in value):
                raise ValueError(
                    f"{name}: false cannot be passed to Beam; flags are switched on with true, "
                    "negative flags have their own name (e.g. no_use_public_ips: true), or leave the option out"
                )
        return options

    def to_args(self) -> list[str]:
        """The options as Beam flags: ``--name=value``, ``--name`` for true, one flag per list item."""
        args: list[str] = []
        for name, value in self.options.items():
            for item in value if isinstance(value, list) else [value]:
                args.append(f"--{name}" if item is True else f"--{name}={item}")
        return args


def load_beam_config(path: Path) -> BeamRunnerConfig:
    """The runner configuration in ``path``, with every option checked by Beam's parser.

    Raises :class:`ConfigError` naming the file and the option for a malformed file, an option
    Beam does not know (with the closest known name) or a value Beam's parser refuses.
    """
    config = load_yaml_model(path, BeamRunnerConfig, "Beam runner config")
    _check_with_beam(config, path)
    return config


def beam_invocation(config: BeamRunnerConfig | None, runner: str | None, extra: list[str]) -> tuple[str, list[str]]:
    """The runner and flags of a prepare run: the file's options, then ``extra`` (which win).

    ``runner`` (the --runner option) must agree with the file's runner when both are given.
    """
    if config is None:
        return runner or DEFAULT_RUNNER, list(extra)
    if runner is not None and runner != config.runner:
        raise ConfigError(f"--runner {runner} contradicts the Beam config's runner {config.runner}; drop one of them")
    return config.runner, [*config.to_args(), *extra]


def runner_flag(runner: str) -> str:
    """The ``--runner`` value of a runner name (a class path for runners Beam has no short name for).

    Importing a runner's module registers its options (e.g. ``--dask_client_address``) with Beam.
    """
    path = RUNNER_CLASSES.get(runner, runner)
    if "." in path:
        importlib.import_module(path.rsplit(".", 1)[0])
    return path


def _check_with_beam(config: BeamRunnerConfig, path: Path) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    try:
        runner_flag(config.runner)
    except ImportError as exc:
        raise ConfigError(f"{path}: runner {config.runner}: {exc}") from exc

    parsers: list[Any] = []
    known = PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)  # captures Beam's parser
    parser = parsers[0]
    parser.exit_on_error = False  # a bad value raises ArgumentError instead of printing usage and exiting
    try:
        _, unknown = parser.parse_known_args(config.to_args())
    except argparse.ArgumentError as exc:
        raise ConfigError(f"{path}: options: {exc}") from exc
    for flag in unknown:
        name = flag.removeprefix("--").split("=", 1)[0]
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{path}: options.{name}: not a Beam pipeline option{hint}")
