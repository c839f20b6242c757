"""The distill stage reuses a finished student dir only for the arch it holds."""

from __future__ import annotations

import json

import pytest

from kdnas.errors import KdnasError
from kdnas.space.arch import Arch
from kdnas.stages.distill import _same_arch


def test_a_finished_student_of_another_arch_is_refused(tmp_path):
    held, wanted = Arch(1, 384, 12, 384), Arch(2, 384, 12, 768)
    (tmp_path / "result.json").write_text(json.dumps({"arch": held.to_dict(), "heldout_kd_loss": 1.0}))
    _same_arch(tmp_path, held)  # the same arch: reused
    with pytest.raises(KdnasError, match=f"holds a student of {held.arch_id}.*recommends {wanted.arch_id}"):
        _same_arch(tmp_path, wanted)


def test_each_distillation_is_given_what_the_unfinished_ones_after_it_read(tmp_path):
    """`_later_needs`: every out dir but the last pending one maps to the union of the teacher layers the pending
    distillations after it read; a finished one neither gets nor contributes any."""
    from kdnas.distill import DistillConfig
    from kdnas.models.student import build_student
    from kdnas.stages.distill import _later_needs
    from kdnas.testing import tiny_teacher

    teacher = tiny_teacher("bert", num_layers=4)

    class Builder:
        def build(self, arch):
            return build_student(teacher.config, arch, seed=0)

    class Ctx:  # what _later_needs reads of a RunContext
        def teacher(self):
            return teacher

        def student_builder(self):
            return Builder()

    cfg = DistillConfig(losses={"hidden": 1.0}, mapping="uniform", relation_heads=4)
    # uniform mapping from 4 teacher layers: 1 layer reads 4; 2 layers 2, 4; 3 layers 1, 2, 4; 4 layers all
    a, b, c, d = (Arch(n, 16, 2, 32) for n in (1, 2, 3, 4))
    done = tmp_path / "done"
    (done / "model").mkdir(parents=True)
    (done / "result.json").write_text("{}")
    (done / "model" / "config.json").write_text("{}")
    plan = [(b, tmp_path / "b"), (d, done), (c, tmp_path / "c"), (a, tmp_path / "a")]
    got = _later_needs(Ctx(), plan, cfg)
    assert set(got) == {tmp_path / "b", tmp_path / "c"}
    assert got[tmp_path / "b"].hidden == (1, 2, 4)  # c and a; the finished 4-layer one adds nothing (no 3)
    assert got[tmp_path / "c"].hidden == (4,)  # a alone
    assert _later_needs(Ctx(), [(a, tmp_path / "a"), (d, done)], cfg) == {}  # one left: nothing to share


def test_an_arch_two_budgets_recommend_is_distilled_once_under_the_users_budget() -> None:
    """The recommendations as the family headline's placement left them: the BERT-mini band, re-centred on the
    side-by-side timing, ends looser (7.04 ms) than the 3x budget (6.63 ms) listed before it, and both got the
    same arch. One job, named after the user's own budget; the tightest budget names an arch two plain ones share."""
    from kdnas.stages.distill import student_jobs, student_name

    three, seven = Arch(3, 384, 12, 384), Arch(1, 384, 12, 768)

    def rec(label: str, ms: float, arch: Arch, floor: float | None = None) -> dict:
        return {"budget": {"label": label, "latency_ms": ms, "min_latency_ms": floor}, "arch": arch.to_dict()}

    recs = [rec("3x", 6.63, three), rec("=bert-mini-L4-H256", 7.04, three, 6.37), rec("7x", 2.84, seven)]
    jobs = student_jobs(recs)
    assert list(jobs) == [seven.arch_id, three.arch_id]  # tightest first
    assert student_name(jobs[three.arch_id][1]) == "student-3x"
    plain = student_jobs([rec("12 ms", 12.0, three), rec("3x", 6.63, three)])
    assert student_name(plain[three.arch_id][1]) == "student-3x"


def test_students_of_fast_budgets_get_the_fast_token_budget() -> None:
    """`distill.fast_tokens` goes to a student whose user budget is at least `fast_speedup` x faster than the
    teacher (a budget in ms by the teacher's latency); equal-latency bands and slower budgets keep `full_tokens`."""
    from kdnas.distill import DistillConfig
    from kdnas.stages.distill import student_tokens

    three, seven, band = Arch(3, 384, 12, 384), Arch(2, 256, 8, 256), Arch(4, 256, 4, 1024)

    def rec(
        arch: Arch, label: str, ms: float, speedup: float | None = None, floor: float | None = None
    ) -> dict:
        budget = {"label": label, "latency_ms": ms, "speedup": speedup, "min_latency_ms": floor}
        return {"budget": budget, "arch": arch.to_dict()}

    cfg = DistillConfig(full_tokens=600_000, fast_tokens=1_800_000, fast_speedup=5.0)
    recs = [rec(three, "3x", 7.7, 3.0), rec(seven, "7x", 3.3, 7.0), rec(band, "=bert-mini", 9.0, floor=8.5)]
    assert student_tokens(cfg, seven.arch_id, recs, 23.1) == 1_800_000
    assert student_tokens(cfg, three.arch_id, recs, 23.1) == 600_000
    assert student_tokens(cfg, band.arch_id, recs, 23.1) == 600_000
    # a fast equal-latency band is still a comparison on the baselines' budget
    assert student_tokens(cfg, band.arch_id, [rec(band, "=x", 3.0, floor=2.8)], 23.1) == 600_000
    # 4 ms of a 23.1 ms teacher is 5.8x: fast; without the teacher's latency it cannot be told, so full
    assert student_tokens(cfg, seven.arch_id, [rec(seven, "4 ms", 4.0)], 23.1) == 1_800_000
    assert student_tokens(cfg, seven.arch_id, [rec(seven, "4 ms", 4.0)], None) == 600_000
    assert student_tokens(cfg, seven.arch_id, [rec(seven, "5 ms", 5.0)], 23.1) == 600_000
    # one arch for 3x and 7x: distilled once, on the larger budget
    assert student_tokens(
        cfg, three.arch_id, [rec(three, "3x", 7.7, 3.0), rec(three, "7x", 3.3, 7.0)], 23.1
    ) == (1_800_000)
    # off, or below full_tokens: full_tokens
    off = DistillConfig(full_tokens=600_000, fast_tokens=None)
    assert student_tokens(off, seven.arch_id, recs, 23.1) == 600_000
    less = DistillConfig(full_tokens=3_600_000, fast_tokens=1_800_000)
    assert student_tokens(less, seven.arch_id, recs, 23.1) == 3_600_000
    assert any(p.startswith("fast_tokens") for p in DistillConfig(fast_tokens=0).check())
    assert any(p.startswith("fast_speedup") for p in DistillConfig(fast_speedup=1.0).check())
