"""Typed config: recipes parse and validate, every problem is reported at once, overrides, no code execution."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdnas import config
from kdnas.config import RunConfig
from kdnas.errors import ConfigError


@pytest.mark.parametrize("name", config.recipe_names())
def test_every_shipped_recipe_parses_and_validates(name: str) -> None:
    cfg = config.load(name)
    assert isinstance(cfg, RunConfig)


def test_recipes_dir_at_repo_root_is_the_shipped_one() -> None:
    root = Path(__file__).resolve().parents[2]
    shipped = sorted(p.stem for p in (root / "recipes").glob("*.yaml"))
    assert shipped == config.recipe_names()
    for p in (root / "recipes").glob("*.yaml"):
        config.load(str(p))


def test_default_recipe_is_the_embedded_default() -> None:
    assert config.load("default").to_dict() == RunConfig().to_dict()
    assert config.load(None).hash() == RunConfig().hash()


def test_every_problem_is_reported_at_once_with_its_key() -> None:
    with pytest.raises(ConfigError) as e:
        config.from_dict(
            {
                "search": {"n_trial": 3, "strategy": "bayes"},
                "target": {"threads": "two", "seq_lens": [128, -1]},
                "distill": {"mapping": "unifrm", "losses": {"hiden": 1.0}},
                "evaluate": {"lrs": []},
            }
        )
    text = str(e.value)
    assert len(e.value.problems) >= 6
    for needle in (
        "search.n_trial: unknown key (did you mean search.n_trials?)",
        "search.strategy: 'bayes'",
        "target.threads: expected an integer",
        "distill.mapping: 'unifrm' is not one of",
        "did you mean 'uniform'",
        "distill.losses.hiden: unknown loss",
        "evaluate.lrs",
    ):
        assert needle in text, needle


def test_wrong_types_are_named() -> None:
    with pytest.raises(ConfigError) as e:
        config.from_dict({"seed": "zero", "corpus": {"sources": "wiki-vital-en"}, "export": {"onnx": "yes"}})
    msgs = "\n".join(e.value.problems)
    assert "seed: expected an integer" in msgs
    assert "corpus.sources: expected a list" in msgs
    assert "export.onnx: expected true or false" in msgs


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError) as e:
        config.from_dict(
            {"corpus": {"heldout_fraction": 0.5, "proxy_fraction": 0.6}, "export": {"onnx": False}}
        )
    msgs = "\n".join(e.value.problems)
    assert "corpus.proxy_fraction" in msgs
    assert "export.int8" in msgs


def test_overrides_parse_yaml_scalars_and_apply() -> None:
    ov = config.parse_overrides(
        ["--search.n_trials", "8", "--distill.lr=1e-3", "--target.seq_lens", "[64, 128]"]
    )
    assert ov == {"search.n_trials": 8, "distill.lr": 0.001, "target.seq_lens": [64, 128]}
    cfg = config.load("smoke", ov)
    assert cfg.search.n_trials == 8 and cfg.distill.lr == 0.001 and cfg.target.seq_lens == [64, 128]


def test_override_of_unknown_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"search\.n_trails: unknown key"):
        config.load(None, {"search.n_trails": 3})


def test_yaml_cannot_execute_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.yaml"
    p.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(str(p))
    assert not marker.exists()


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="neither a config file nor a shipped recipe"):
        config.load("no-such-recipe")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config.load(str(p))
    b = tmp_path / "bin.yaml"
    b.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError):
        config.load(str(b))


def test_hash_ignores_name_and_run_dir_but_not_settings() -> None:
    a = RunConfig()
    assert config.from_dict({"name": "x", "run_dir": "/tmp/y"}).hash() == a.hash()
    assert config.from_dict({"seed": 1}).hash() != a.hash()
    assert config.diff(a, config.from_dict({"seed": 1})) == ["seed: 0 -> 1"]


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = config.load("smoke")
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    assert config.load(str(p)).to_dict() == cfg.to_dict()


def test_every_field_has_a_docstring() -> None:
    import dataclasses

    def walk(cls: type) -> None:
        docs = config.field_docs(cls)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            default = getattr(cls(), f.name)
            if dataclasses.is_dataclass(default):
                walk(type(default))
            else:
                assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"

    walk(RunConfig)
