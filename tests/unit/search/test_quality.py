"""`search.quality`: a candidate's quality measured as its sentence-embedding gap to the teacher (1 - recall@10 or
1 - cosine on held-out passages) in the same short distillation; the KD loss kept beside it; a study measured
one way refuses to resume another."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kdnas import config
from kdnas.errors import ConfigError, SearchError
from kdnas.space.arch import Arch
from kdnas.stages.context import RunContext
from kdnas.testing import WORDS, save_tiny_teacher


def _ctx(tmp_path: Path, quality: str) -> RunContext:
    teacher = save_tiny_teacher(tmp_path / "teacher")
    corpus = tmp_path / "corpus.txt"  # distinct sentences: the held-out passages must be many
    corpus.write_text("\n\n".join(
        " ".join(" ".join(WORDS[(11 * d + 5 * k + j) % len(WORDS)] for j in range(6)).capitalize() + "."
                 for k in range(3))
        for d in range(240)) + "\n")  # fmt: skip
    cfg = config.from_dict({
        "teacher": {"name": str(teacher)},
        "corpus": {"sources": [str(corpus)], "seq_len": 32, "heldout_fraction": 0.2},
        "target": {"backend": "fake", "seq_lens": [32], "calibrate_archs": 0},
        "distill": {"proxy_tokens": 400, "batch_size": 8, "relation_heads": 2, "pooling": "mean"},
        "search": {"quality": quality, "quality_passages": 40},
    })  # fmt: skip
    return RunContext(cfg=cfg, run_dir=tmp_path / "run", progress=False)


@pytest.mark.parametrize("quality", ["recall", "cosine"])
def test_quality_is_the_embedding_gap_and_the_kd_loss_is_kept(tmp_path: Path, quality: str) -> None:
    ev = _ctx(tmp_path, quality).evaluator_like()
    narrow = Arch(
        num_layers=1, hidden_size=16, num_heads=2, ffn_size=32
    )  # narrower: its Dense maps to the teacher
    r = ev.evaluate(narrow, fidelity="short", tokens=400)
    x = r.extra
    assert (
        x["quality"] == quality and math.isfinite(x["heldout_kd_loss"]) and x["heldout_kd_loss"] != r.kd_loss
    )
    value = x["recall_at_10"] if quality == "recall" else x["emb_cosine"]
    assert 0.0 <= r.kd_loss <= 2.0 and r.kd_loss == pytest.approx(1.0 - value)


def test_kd_loss_quality_is_unchanged(tmp_path: Path) -> None:
    ev = _ctx(tmp_path, "kd_loss").evaluator_like()
    r = ev.evaluate(
        Arch(num_layers=1, hidden_size=16, num_heads=2, ffn_size=32), fidelity="short", tokens=400
    )
    assert r.kd_loss == r.extra["heldout_kd_loss"] and "recall_at_10" not in r.extra


def test_bad_quality_settings_and_a_study_measured_otherwise(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"search\.quality: 'bleu' is not one of 'kd_loss', 'cosine', 'recall'"
    ):
        config.from_dict({"search": {"quality": "bleu"}})
    with pytest.raises(ConfigError, match=r"quality_passages: 5 is too few"):
        config.from_dict({"search": {"quality": "recall", "quality_passages": 5}})

    from kdnas.search.config import SearchConfig
    from kdnas.search.study import run_search
    from kdnas.search.testing import FakeEvaluator
    from kdnas.space.spaces import default_space
    from kdnas.testing import tiny_config

    teacher = tiny_config(num_hidden_layers=4, hidden_size=64, num_attention_heads=4, intermediate_size=128)
    fake = FakeEvaluator.for_teacher(teacher, seed=0)
    kw = {"tokens": 100, "teacher_latency_ms": fake.teacher_latency_ms, "run_dir": tmp_path / "s"}
    run_search(
        default_space(teacher), fake, SearchConfig(strategy="random", n_trials=2, promote_fraction=0.0), **kw
    )
    again = SearchConfig(strategy="random", n_trials=3, promote_fraction=0.0, quality="recall")
    with pytest.raises(SearchError, match=r"measured its candidates' quality as 'kd_loss', not 'recall'"):
        run_search(default_space(teacher), fake, again, **kw)
    again = SearchConfig(strategy="random", n_trials=3, promote_fraction=0.0, proxy_readout="fitted")
    with pytest.raises(
        SearchError, match=r"with the 'geomean' read-out, not 'fitted' \(search.proxy_readout\)"
    ):
        run_search(default_space(teacher), fake, again, **kw)
    again = SearchConfig(strategy="random", n_trials=3, promote_fraction=0.0, proxy_loss="full")
    with pytest.raises(
        SearchError, match=r"ranked its candidates by the 'states' held-out KD loss, not 'full'"
    ):
        run_search(default_space(teacher), fake, again, **kw)
