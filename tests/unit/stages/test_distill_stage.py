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
