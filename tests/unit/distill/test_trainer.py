"""The training loop: exact resume, checkpoints, NaN detection, flash mode, budgets and bad input."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from kdnas.distill import DistillConfig, TeacherCache, distill
from kdnas.distill.checkpoint import load_checkpoint
from kdnas.distill.trainer import lr_factor, plan_stages
from kdnas.errors import ConfigError, DataError, DistillError
from kdnas.models.student import build_student
from kdnas.space.arch import Arch
from kdnas.testing import tiny_batch, tiny_teacher

ARCH = Arch(num_layers=2, hidden_size=16, num_heads=2, ffn_size=32)


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return tiny_teacher("bert", num_layers=4)


def _student(teacher: torch.nn.Module, arch: Arch = ARCH) -> torch.nn.Module:
    return build_student(teacher.config, arch, seed=0)


def _cfg(**kw: object) -> DistillConfig:
    base: dict = dict(
        batch_size=8, relation_heads=4, checkpoint_every=3, losses={"hidden": 1.0, "relation": 1.0}
    )
    base.update(kw)
    return DistillConfig(**base)  # type: ignore[arg-type]


BLOCK = tiny_batch(40, 12)


def test_exact_resume_after_a_stop(teacher: torch.nn.Module, tmp_path: Path) -> None:
    cfg = _cfg(grad_accum=2)
    full = distill(teacher, _student(teacher), BLOCK, cfg, steps=8, progress=False)
    assert full.steps == 8 and not full.failed
    part = distill(
        teacher, _student(teacher), BLOCK, cfg, steps=8, progress=False, out_dir=tmp_path, stop_after_steps=5
    )
    assert part.steps == 5 and part.total_steps == 8
    resumed = distill(
        teacher, _student(teacher), BLOCK, cfg, steps=8, progress=False, out_dir=tmp_path, resume=True
    )
    assert resumed.steps == 8
    assert [e["loss"] for e in resumed.history] == [e["loss"] for e in full.history]  # bitwise
    assert resumed.final_loss == full.final_loss
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 9))
    # the projections are part of the checkpoint
    state = load_checkpoint(tmp_path)
    assert any(k.startswith("proj.hidden_1") for k in state["distiller"])
    # a finished run resumes to the same result without training
    again = distill(
        teacher, _student(teacher), BLOCK, cfg, steps=8, progress=False, out_dir=tmp_path, resume=True
    )
    assert again.final_loss == full.final_loss and again.steps == 8


def test_killed_run_resumes_from_its_last_checkpoint(
    teacher: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdnas.distill import trainer

    cfg = _cfg(checkpoint_every=2)
    full = distill(teacher, _student(teacher), BLOCK, cfg, steps=6, progress=False)
    real = trainer.lr_factor

    def killed_in_step_5(step: int, steps: int, c: DistillConfig) -> float:
        if step == 4:
            raise KeyboardInterrupt
        return real(step, steps, c)

    monkeypatch.setattr(trainer, "lr_factor", killed_in_step_5)
    with pytest.raises(KeyboardInterrupt):
        distill(teacher, _student(teacher), BLOCK, cfg, steps=6, progress=False, out_dir=tmp_path)
    monkeypatch.setattr(trainer, "lr_factor", real)
    assert load_checkpoint(tmp_path)["step"] == 4
    resumed = distill(
        teacher, _student(teacher), BLOCK, cfg, steps=6, progress=False, out_dir=tmp_path, resume=True
    )
    assert [e["loss"] for e in resumed.history] == [e["loss"] for e in full.history]


def test_corrupt_and_foreign_checkpoints(teacher: torch.nn.Module, tmp_path: Path) -> None:
    cfg = _cfg()
    distill(teacher, _student(teacher), BLOCK, cfg, steps=3, progress=False, out_dir=tmp_path)
    with pytest.raises(DistillError, match="different run"):
        distill(
            teacher, _student(teacher), BLOCK, cfg, steps=4, progress=False, out_dir=tmp_path, resume=True
        )
    ck = tmp_path / "checkpoint-000003.pt"
    ck.write_bytes(ck.read_bytes()[:200])
    with pytest.raises(DistillError, match=r"no intact checkpoint.*sha256 does not match.*delete"):
        distill(
            teacher, _student(teacher), BLOCK, cfg, steps=3, progress=False, out_dir=tmp_path, resume=True
        )


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(
    teacher: torch.nn.Module, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _cfg(checkpoint_every=2)
    full = distill(teacher, _student(teacher), BLOCK, cfg, steps=6, progress=False)
    part = distill(
        teacher, _student(teacher), BLOCK, cfg, steps=6, progress=False, out_dir=tmp_path, stop_after_steps=5
    )
    assert part.steps == 5
    # kept: the last two (steps 4 and 5), named in the manifest with their checksums
    manifest = json.loads((tmp_path / "checkpoint.json").read_text())["checkpoints"]
    assert [e["step"] for e in manifest] == [5, 4]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pt")) == [
        "checkpoint-000004.pt",
        "checkpoint-000005.pt",
    ]
    newest = tmp_path / "checkpoint-000005.pt"
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated: still a file, wrong checksum
    with caplog.at_level("WARNING", logger="kdnas.distill.checkpoint"):
        resumed = distill(
            teacher, _student(teacher), BLOCK, cfg, steps=6, progress=False, out_dir=tmp_path, resume=True
        )
    assert "checkpoint-000005.pt (sha256 does not match" in caplog.text and "step 4" in caplog.text
    assert [e["loss"] for e in resumed.history] == [e["loss"] for e in full.history]
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 7))


def test_a_checkpoint_of_the_earlier_layout_still_resumes(teacher: torch.nn.Module, tmp_path: Path) -> None:
    cfg = _cfg(checkpoint_every=2)
    full = distill(teacher, _student(teacher), BLOCK, cfg, steps=6, progress=False)
    distill(
        teacher, _student(teacher), BLOCK, cfg, steps=6, progress=False, out_dir=tmp_path, stop_after_steps=4
    )
    (tmp_path / "checkpoint-000004.pt").rename(tmp_path / "checkpoint.pt")
    for p in [tmp_path / "checkpoint.json", *tmp_path.glob("checkpoint-*.pt")]:
        p.unlink()
    resumed = distill(
        teacher, _student(teacher), BLOCK, cfg, steps=6, progress=False, out_dir=tmp_path, resume=True
    )
    assert [e["loss"] for e in resumed.history] == [e["loss"] for e in full.history]
    assert not (tmp_path / "checkpoint.pt").exists()  # superseded by the new layout


def test_nan_ends_the_run_with_a_recorded_failure(teacher: torch.nn.Module) -> None:
    s = _student(teacher)
    with torch.no_grad():
        s.encoder.layer[1].output.dense.weight[0, 0] = float("nan")
    res = distill(teacher, s, BLOCK, _cfg(), steps=5, progress=False)
    assert res.failed and "non-finite" in res.failed and res.steps == 0


def test_loss_goes_down_and_result_fields(teacher: torch.nn.Module) -> None:
    cfg = _cfg(losses={"hidden": 1.0, "relation": 1.0, "attention": 0.5, "embedding": 0.5}, lr=3e-3)
    res = distill(teacher, _student(teacher), tiny_batch(240, 12), cfg, steps=30, progress=False)
    assert res.failed is None
    assert set(res.loss_by_component) == {"hidden", "relation", "attention", "embedding"}
    first = sum(e["loss"] for e in res.history[:5]) / 5
    assert res.final_loss < 0.8 * first
    row_tokens = BLOCK["attention_mask"].sum(1)
    assert 30 * 8 * int(row_tokens.min()) <= res.tokens <= 30 * 8 * int(row_tokens.max())
    assert res.tokens == res.history[-1]["tokens"]
    assert res.tokens_per_s > 0 and res.seconds > 0
    assert res.to_dict(history=False)["steps"] == 30


def test_token_budget_and_seed(teacher: torch.nn.Module) -> None:
    cfg = _cfg()
    per_step = 8 * float(BLOCK["attention_mask"].sum()) / 40
    res = distill(teacher, _student(teacher), BLOCK, cfg, tokens=int(per_step * 3), progress=False)
    assert res.total_steps == 3
    a = distill(teacher, _student(teacher), BLOCK, cfg, steps=3, seed=1, progress=False)
    b = distill(teacher, _student(teacher), BLOCK, cfg, steps=3, seed=1, progress=False)
    c = distill(teacher, _student(teacher), BLOCK, cfg, steps=3, seed=2, progress=False)
    assert a.final_loss == b.final_loss != c.final_loss


def test_flash_mode_runs_layer_by_layer(teacher: torch.nn.Module) -> None:
    cfg = _cfg(proxy_mode="flash", flash_steps_per_layer=3)
    s = _student(teacher)
    emb_before = s.embeddings.word_embeddings.weight.clone()
    res = distill(teacher, s, BLOCK, cfg, steps=10, progress=False)
    assert [e["stage"] for e in res.history] == ["layer1"] * 3 + ["layer2"] * 3 + ["all"] * 4
    assert set(res.loss_by_stage) == {"layer1", "layer2", "all"}
    assert {"hidden", "attention"} == {k[5:] for k in res.history[0] if k.startswith("loss_")}
    assert res.failed is None and not torch.equal(emb_before, s.embeddings.word_embeddings.weight)
    assert all(p.requires_grad for p in s.parameters())  # freezing undone


def test_flash_freezes_lower_layers() -> None:
    stages = plan_stages(12, 2, _cfg(flash_steps_per_layer=3), "flash")
    assert [(st.name, st.steps) for st in stages] == [("layer1", 3), ("layer2", 3), ("all", 6)]
    with pytest.warns(UserWarning, match="per layer"):
        stages = plan_stages(6, 2, _cfg(flash_steps_per_layer=3), "flash")
    assert [st.steps for st in stages] == [2, 2, 2]


def test_schedule() -> None:
    cfg = _cfg(warmup_ratio=0.2, schedule="linear")
    f = [lr_factor(i, 10, cfg) for i in range(10)]
    assert f[0] == 0.5 and f[1] == 1.0 and f[2] == 1.0 and f[-1] == pytest.approx(1 / 8)
    cos = [lr_factor(i, 10, _cfg(warmup_ratio=0.0)) for i in range(10)]
    assert cos[0] == 1.0 and all(a > b for a, b in itertools.pairwise(cos))


def test_shared_cache_dir_is_reused(teacher: torch.nn.Module, tmp_path: Path) -> None:
    cache = TeacherCache(tmp_path / "tc")
    a = distill(teacher, _student(teacher), BLOCK, _cfg(), steps=3, teacher_cache=cache, progress=False)
    b = distill(teacher, _student(teacher), BLOCK, _cfg(), steps=3, progress=False)
    assert a.final_loss == pytest.approx(b.final_loss, rel=1e-3)  # fp16 cache vs fp16 temp cache: same
    assert len(list((tmp_path / "tc").iterdir())) == 1


def test_a_budget_below_one_epoch_caches_only_the_rows_it_reads(
    teacher: torch.nn.Module, tmp_path: Path
) -> None:
    from kdnas.distill.teacher_cache import CachedTeacher

    seen: list[int] = []
    real = TeacherCache.prepare

    def spy(self: TeacherCache, t: object, data: object, *a: object, **k: object) -> CachedTeacher:
        handle = real(self, t, data, *a, **k)  # type: ignore[arg-type]
        seen.append(handle.num_rows)
        return handle

    cache = TeacherCache(tmp_path / "tc")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TeacherCache, "prepare", spy)
        a = distill(teacher, _student(teacher), BLOCK, _cfg(), steps=2, teacher_cache=cache, progress=False)
        b = distill(teacher, _student(teacher), BLOCK, _cfg(), steps=2, teacher_cache=cache, progress=False)
        distill(teacher, _student(teacher), BLOCK, _cfg(), steps=8, teacher_cache=cache, progress=False)
    assert seen == [16, 16, 40]  # 2 steps x 8 rows of the 40; 8 steps is more than an epoch: every row
    assert a.final_loss == b.final_loss  # the same subset each time (seeded), one cache entry for it
    assert len(list((tmp_path / "tc").iterdir())) == 2


def _teacher_rows(teacher: torch.nn.Module) -> list[int]:
    """Rows of every teacher forward from now on (a forward hook on the encoder, removed with the teacher)."""
    from kdnas.distill.teacher_cache import base_encoder

    rows: list[int] = []
    base_encoder(teacher).register_forward_hook(
        lambda m, a, k, o: rows.append(int(k["input_ids"].shape[0])), with_kwargs=True
    )
    return rows


@pytest.mark.parametrize("fits", [True, False])
def test_cache_also_fills_a_later_students_outputs_in_the_same_teacher_pass(
    tmp_path: Path, fits: bool
) -> None:
    """A 3-layer student reads a teacher layer the 2-layer one does not: with `cache_also` the first
    distillation's teacher pass caches both, and the second distillation never runs the teacher; when the two
    do not fit the budget together, each fills its own (the second runs the teacher again)."""
    from kdnas.distill import Distiller, teacher_info

    teacher = tiny_teacher("bert", num_layers=4)
    # uniform mapping from 4 teacher layers: the 2-layer student reads 2 and 4, the 3-layer one 1, 2 and 4; 40 rows
    # x 12 tokens x 32 dims x 2 bytes = 30 KiB per layer: 0.07 MB holds the first's two, not all three
    cfg = _cfg(losses={"hidden": 1.0}, mapping="uniform")
    one = Arch(num_layers=3, hidden_size=16, num_heads=2, ffn_size=32)
    second_needs = Distiller(_student(teacher, one), teacher_info(teacher), cfg).needs()
    first_needs = Distiller(_student(teacher), teacher_info(teacher), cfg).needs()
    assert set(second_needs.hidden) - set(first_needs.hidden)  # the test needs layers the first does not read
    union = first_needs | second_needs
    assert set(union.hidden) == set(first_needs.hidden) | set(second_needs.hidden)
    cache = TeacherCache(tmp_path / "tc", budget_mb=1 if fits else 0.07)
    assert cache.size_mb(teacher, BLOCK, union) == pytest.approx(len(union.hidden) * 40 * 12 * 32 * 2 / 2**20)
    rows = _teacher_rows(teacher)
    distill(teacher, _student(teacher), BLOCK, cfg, steps=6, teacher_cache=cache, progress=False,
            cache_also=second_needs)  # fmt: skip
    first_pass = sum(rows)
    assert first_pass >= 40  # one pass over the block (plus a probe row at most)
    rows.clear()
    b = distill(teacher, _student(teacher, one), BLOCK, cfg, steps=6, teacher_cache=cache, progress=False)
    if fits:
        assert sum(rows) == 0  # every item it reads was cached by the first distillation's pass
        ref = distill(teacher, _student(teacher, one), BLOCK, cfg, steps=6, progress=False)
        assert b.final_loss == ref.final_loss  # the same fp16 outputs as a cache of its own
    else:
        assert sum(rows) > 0  # the two did not fit together: it runs the teacher for its own


def test_bad_input(teacher: torch.nn.Module) -> None:
    deep = Arch(num_layers=6, hidden_size=16, num_heads=2, ffn_size=32)
    with pytest.raises(DistillError, match="at most 4 layers"):
        distill(teacher, _student(teacher, deep), BLOCK, _cfg(mapping="last"), steps=2, progress=False)
    with pytest.raises(DataError, match="empty"):
        empty = {"input_ids": torch.zeros(0, 8, dtype=torch.long), "attention_mask": torch.zeros(0, 8)}
        distill(teacher, _student(teacher), empty, _cfg(), steps=2, progress=False)
    with pytest.raises(DistillError, match="not both"):
        distill(teacher, _student(teacher), BLOCK, _cfg(), steps=2, tokens=100, progress=False)
    with pytest.raises(ConfigError, match=r"distill\.losses\.foo"):
        distill(teacher, _student(teacher), BLOCK, _cfg(losses={"foo": 1.0}), steps=2, progress=False)
    with pytest.raises(DistillError, match="MLM head"):
        distill(teacher, _student(teacher), BLOCK, _cfg(losses={"logits": 1.0}), steps=2, progress=False)
    with pytest.raises(DistillError, match="relation_heads"):
        distill(teacher, _student(teacher), BLOCK, _cfg(relation_heads=32), steps=2, progress=False)


def test_small_corpus_and_many_epochs_warn(teacher: torch.nn.Module) -> None:
    with pytest.warns(UserWarning, match="fewer than one batch"):
        distill(teacher, _student(teacher), tiny_batch(4, 12), _cfg(), steps=2, progress=False)
    with pytest.warns(UserWarning, match="epochs"):
        distill(teacher, _student(teacher), tiny_batch(16, 12), _cfg(), steps=20, progress=False)


def test_logit_kd_with_an_mlm_teacher() -> None:
    from transformers import AutoModelForMaskedLM

    from kdnas.distill import mlm_head
    from kdnas.testing import tiny_config

    torch.manual_seed(0)
    t = AutoModelForMaskedLM.from_config(tiny_config("bert"), attn_implementation="eager").eval()
    b = tiny_batch(3, 8)
    with torch.no_grad():
        head = mlm_head(t)
        assert head is not None
        torch.testing.assert_close(head(t.bert(**b).last_hidden_state), t(**b).logits)
    res = distill(
        t,
        _student(t),
        BLOCK,
        _cfg(losses={"logits": 1.0, "hidden": 1.0}, temperature=2.0),
        steps=4,
        progress=False,
    )
    assert res.failed is None and "logits" in res.loss_by_component
