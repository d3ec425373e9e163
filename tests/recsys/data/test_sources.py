import pytest

from recsys.data.catalog import builtin_source, resolve_source
from recsys.data.config import load_prepare_config
from recsys.data.sources import load_source_yaml
from recsys.errors import ConfigError, DataError


def test_yaml_errors_name_the_file_and_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ninteractions:\n  paths: [a.csv]\n")
    with pytest.raises(
        ConfigError, match=r"(?s)bad.yaml: invalid dataset description:.*interactions.columns.*required"
    ):
        load_source_yaml(path)
    path.write_text("name: x\ninteractions:\n  paths: [a.csv]\n  header: false\n  columns: {user: u, item: i}\n")
    with pytest.raises(ConfigError, match=r"columns are named \['u', 'i'\] but the files have no header"):
        load_source_yaml(path)
    path.write_text("name: x\ninteractions: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_source_yaml(path)
    with pytest.raises(ConfigError, match=r"missing.yaml: no such dataset description file"):
        load_source_yaml(tmp_path / "missing.yaml")


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("name: d\ninteractions:\n  paths: [sub/a.csv]\n  columns: {user: u, item: i}\n")
    assert load_source_yaml(path).interaction_paths() == [str(tmp_path / "sub" / "a.csv")]


def test_prepare_config_is_validated_with_a_clear_message(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("prepare:\n  split: {method: random, ratios: [0.8, 0.1, 0.2]}\n")
    with pytest.raises(ConfigError, match=r"must be positive and add up to 1"):
        load_prepare_config(path)
    path.write_text("prepare:\n  filter: {min_user_interactions: 1}\n")
    with pytest.raises(ConfigError, match=r"greater than or equal to 3"):
        load_prepare_config(path)


def test_unfetched_and_unknown_datasets_say_what_to_run(settings):
    with pytest.raises(DataError, match=r"run `evorec data fetch ml-1m` first"):
        builtin_source("ml-1m", settings)
    with pytest.raises(DataError, match=r"unknown dataset 'ml-20m'"):
        resolve_source("ml-20m", settings)
