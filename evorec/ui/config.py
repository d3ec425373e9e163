"""Settings of the review console (``evorec ui``): where to read from, who may sign in.

One model, read from the environment (prefix ``EVOREC_UI_``) and from the YAML section ``ui``
(the file wins over the environment, command-line options over both). The reviewers' passwords
or tokens are secrets: ``SecretStr`` keeps them out of reprs and logs, and no page echoes them.
"""

from __future__ import annotations

from pathlib import Path

import limits
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from recsys.config_files import load_yaml_model
from recsys.errors import ConfigError


class UIConfig(BaseSettings):
    """``users`` maps each reviewer's name (the actor in the audit log) to their password or token.

    Example: ``EVOREC_UI_USERS='{"alice": "a long passphrase"}' evorec ui``.
    """

    model_config = SettingsConfigDict(
        env_prefix="EVOREC_UI_",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,  # errors never show a secret
    )

    users: dict[str, SecretStr] = Field(default_factory=dict, description="reviewer name -> password or token")
    session_secret: SecretStr | None = Field(
        default=None, description="signs session cookies; a random one per start when unset (sessions end on restart)"
    )
    session_hours: float = Field(default=8.0, gt=0, description="a session lasts this long after sign-in")
    failed_sign_ins: str = Field(
        default="5/minute;20/hour",
        description="failed sign-ins allowed per client address and per reviewer name before sign-in is refused "
        "(429) for the rest of the window; the `limits` notation, e.g. '5/minute;20/hour'",
    )
    secure_cookies: bool = Field(default=False, description="send the session cookie over HTTPS only")
    registry_url: str | None = Field(default=None, description="default: $EVOREC_REGISTRY_URL or the data dir's")
    runs_dir: Path = Field(default=Path("runs"), description="evolution runs: its sub-folders holding evolution.db")
    experiments_dir: Path = Field(default=Path("runs/experiments"), description="one sub-folder per A/B experiment")
    rewards_dir: Path = Field(default=Path("runs/rewards"), description="the store of versioned reward specs")
    data_dir: Path | None = Field(
        default=None, description="cache of prepared data (item genres for reward previews); default $EVOREC_DATA_DIR"
    )
    fitness: str = Field(default="ndcg@10", description="the validation metric the evolution runs rank by")
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)

    @field_validator("failed_sign_ins")
    @classmethod
    def _rate_limit_notation(cls, value: str) -> str:
        try:
            limits.parse_many(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a rate limit like '5/minute;20/hour': {exc}") from exc
        return value

    @field_validator("users")
    @classmethod
    def _usable_credentials(cls, users: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in users.items():
            if not name.strip() or name != name.strip():
                raise ValueError(f"reviewer name {name!r} must be non-empty, without surrounding spaces")
            if len(secret.get_secret_value()) < 8:
                raise ValueError(f"the password or token of {name!r} must have at least 8 characters")
        return users


def load_ui_config(path: Path | None) -> UIConfig:
    """The console's settings from the environment and, when given, the YAML file ``path``."""
    if path is not None:
        return load_yaml_model(path, UIConfig, "console config", section="ui")
    try:
        return UIConfig()
    except ValidationError as exc:
        raise ConfigError(f"invalid console settings in the environment (EVOREC_UI_*):\n{exc}") from exc
    except SettingsError as exc:  # e.g. EVOREC_UI_USERS that is not JSON
        raise ConfigError(
            f"invalid console settings in the environment (EVOREC_UI_*): {exc}; EVOREC_UI_USERS must be a JSON "
            'object such as \'{"alice": "a long passphrase"}\''
        ) from exc


def require_reviewers(config: UIConfig) -> None:
    """Refuse to serve a console nobody can sign in to (the message says how to add a reviewer)."""
    if not config.users:
        raise ConfigError(
            'the review console has no reviewers: set EVOREC_UI_USERS=\'{"your-name": "a password or token"}\' '
            "or ui.users in the --config file"
        )
