"""Search spaces: YAML parsing and validation, sampling, encoding, the Optuna bridge, empty-space errors."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from transformers import BertConfig, RobertaConfig

from kdnas.errors import ConfigError, SearchError
from kdnas.space.arch import Arch
from kdnas.space.space import Constraints, Dimension, SearchSpace
from kdnas.space.spaces import default_space, load_space, mobilebert_space, parse_space, shipped_spaces


@pytest.fixture(scope="module")
def minilm() -> BertConfig:
    return BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)


def test_default_space_shape(minilm):
    sp = default_space(minilm)
    assert sp["num_layers"].values == (1, 2, 3, 4, 5, 6)
    assert sp["hidden_size"].values == (64, 128, 192, 256, 320, 384)
    archs = sp.enumerate()
    assert len(archs) == sp.size() == 6 * 6 * 2 * 4  # head dims 32/64 always divide multiples of 64
    assert all(a.hidden_size % a.num_heads == 0 and a.head_dim in (32, 64) for a in archs)
    assert all(a.ffn_size in (a.hidden_size * r for r in (1, 2, 3, 4)) for a in archs)
    assert Arch(6, 384, 12, 1536) in sp  # the teacher's own shape is in its space
    assert Arch(6, 384, 12, 1000) not in sp


def test_tiny_teacher_default_space():
    from kdnas.testing import tiny_config

    sp = default_space(tiny_config("bert"))  # hidden 32, 4 heads: widths step by the head dim 8
    assert sp["hidden_size"].values == (8, 16, 24, 32)
    assert sp.size() > 0


def test_yaml_ranges_choices_and_constraints(minilm):
    sp = parse_space(
        {
            "dimensions": {
                "num_layers": {"min": 2, "max": 6, "step": 2},
                "hidden_size": [128, 256],
                "num_heads": {"choices": [2, 4, 8]},
                "ffn_size": 512,
            },
            "constraints": {"head_dim_min": 32, "head_dim_max": 64},
        },
        minilm,
    )
    assert sp["num_layers"].values == (2, 4, 6)
    assert sp["ffn_size"].fixed
    heads = {(a.hidden_size, a.num_heads) for a in sp.enumerate()}
    assert heads == {(128, 2), (128, 4), (256, 4), (256, 8)}  # head dim 32..64 only
    v = sp.violations(Arch(2, 128, 8, 512))
    assert v and v[0].startswith("head_dim_min")


def test_yaml_reports_every_problem(minilm):
    with pytest.raises(ConfigError) as e:
        parse_space(
            {
                "dimensions": {
                    "num_layer": [2],
                    "hidden_size": {"min": 64},
                    "ffn_ratio": [-1],
                    "activation": ["tanh"],
                },
                "constraints": {"max_params": 3},
                "familly": "teacher",
            },
            minilm,
            where="my.yaml",
        )
    msg = str(e.value)
    for needle in (
        "did you mean num_layers",
        "needs min and max",
        "positive numbers",
        "tanh",
        "max_params_m",
        "familly",
    ):
        assert needle in msg, needle


def test_shipped_spaces_load(minilm):
    names = shipped_spaces()
    assert {"small-explicit", "default-capped", "mobilebert-autodistill"} <= set(names)
    for name in names:
        sp = load_space(name, minilm)
        if "corpus" in sp.vocab_choices:  # resolved on the run's corpus by the data stage
            sp = sp.with_vocab({"corpus": 12_000})
        assert sp.size() > 0, name
    capped = load_space("default-capped", minilm)
    assert capped.constraints.max_params_m == 15
    assert min(a.num_layers for a in capped.enumerate()) == 2
    assert all(capped.params_m(a) <= 15 for a in capped.enumerate())


def test_load_space_errors(tmp_path, minilm):
    with pytest.raises(SearchError, match="not a file"):
        load_space("nope", minilm)
    bad = tmp_path / "s.yaml"
    bad.write_text("dimensions: [1, 2]\n")
    with pytest.raises(ConfigError, match="dimensions: must be a mapping"):
        load_space(str(bad), minilm)


def test_mobilebert_space_builds_hf_configs(minilm):
    from kdnas.models.student import student_config

    sp = mobilebert_space(minilm)
    for arch in sp.sample_many(5, 0):
        assert arch.family == "mobilebert" and arch.bottleneck_size <= arch.hidden_size
        cfg = student_config(minilm, arch)
        assert cfg.model_type == "mobilebert"
        assert cfg.intra_bottleneck_size == arch.bottleneck_size
        assert cfg.num_feedforward_networks == arch.num_ffn_stacked


def test_mobilebert_refuses_non_bert_vocab():
    with pytest.raises(SearchError, match=r"BERT's WordPiece vocabulary.*roberta"):
        mobilebert_space(RobertaConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12))


def test_sample_is_uniform_valid_and_seeded(minilm):
    sp = default_space(minilm).with_constraints(max_params_m=12)
    a = sp.sample_many(20, 3)
    assert [x.arch_id for x in a] == [x.arch_id for x in sp.sample_many(20, 3)]
    assert len({x.arch_id for x in a}) == 20
    assert all(sp.contains(x) for x in a)
    assert not sp.sample_many(5, 0, exclude={x.arch_id for x in sp.enumerate()})


def test_encode_in_unit_cube(minilm):
    sp = default_space(minilm)
    x = sp.encode_many(sp.enumerate())
    assert x.shape == (288, sp.encoding_dim) and sp.encoding_dim == 4  # activation is fixed: no column
    assert x.min() == 0.0 and x.max() == 1.0
    assert len({tuple(r) for r in x}) == 288  # injective
    cat = SearchSpace(
        [
            Dimension("num_layers", (1, 2)),
            Dimension("hidden_size", (64,)),
            Dimension("num_heads", (2,)),
            Dimension("ffn_size", (64,)),
            Dimension("activation", ("gelu", "relu", "silu")),
        ]
    )
    assert cat.encode(Arch(2, 64, 2, 64, activation="relu")).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_optuna_bridge_round_trips(minilm):
    sp = default_space(minilm)
    study = optuna.create_study()
    for arch in sp.sample_many(10, 1):
        study.enqueue_trial(sp.params_of(arch))
        trial = study.ask()
        assert sp.suggest(trial) == arch
        study.tell(trial, 0.0)
    dists = sp.distributions()
    assert isinstance(dists["hidden_size"], optuna.distributions.IntDistribution)
    assert dists["hidden_size"].step == 64
    assert "activation" not in dists  # fixed dimensions are not searched


def test_empty_space_names_the_constraint(minilm):
    sp = default_space(minilm).with_constraints(max_params_m=0.5)
    with pytest.raises(SearchError, match=r"constraint max_params_m=0.5 rules out every arch"):
        sp.check_nonempty()
    slow = default_space(minilm).replace(latency_fn=lambda a: 100.0).with_constraints(max_latency_ms=10)
    with pytest.raises(SearchError, match="max_latency_ms=10"):
        slow.check_nonempty()
    hopeless = SearchSpace(
        [
            Dimension("num_layers", (1,)),
            Dimension("hidden_size", (100,)),
            Dimension("num_heads", (3,)),
            Dimension("ffn_size", (64,)),
        ]
    )
    with pytest.raises(SearchError, match=r"relaxing any single constraint does not help.*arch"):
        hopeless.check_nonempty()


def test_constraints_need_their_inputs():
    dims = [
        Dimension("num_layers", (1,)),
        Dimension("hidden_size", (64,)),
        Dimension("num_heads", (2,)),
        Dimension("ffn_size", (64,)),
    ]
    with pytest.raises(SearchError, match="max_params_m: needs the teacher config"):
        SearchSpace(dims, constraints=Constraints(max_params_m=3))
    with pytest.raises(SearchError, match="exactly one of num_heads / head_dim"):
        SearchSpace([*dims, Dimension("head_dim", (32,))])


def test_to_dict_round_trips(minilm):
    sp = load_space("small-explicit", minilm)
    again = parse_space(sp.to_dict(), minilm)
    assert [a.arch_id for a in again.enumerate()] == [a.arch_id for a in sp.enumerate()]
    assert np.allclose(again.encode(sp.enumerate()[0]), sp.encode(sp.enumerate()[0]))
