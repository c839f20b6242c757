"""Export a student the size of the real minilm-l6 teacher (its config and tokenizer), ONNX fp32 and int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_export_minilm_sized_student(minilm_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from kdnas.export import export_model
    from kdnas.export.onnx import check_batch, input_names, onnx_hidden, torch_hidden
    from kdnas.models.student import arch_of, build_student

    cfg = AutoConfig.from_pretrained(minilm_dir)
    arch = arch_of(cfg)
    student = build_student(cfg, arch, seed=0).eval()
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    out = tmp_path / "minilm-sized"
    result = export_model(student, tok, out, measure=False)

    assert result.checks["model.onnx"].passed and result.checks["model.onnx"].max_abs_diff < 1e-3
    assert result.checks["model-int8.onnx"].mean_cosine > 0.9
    assert result.params_total == pytest.approx(22.7e6, rel=0.01)
    assert (out / "model-int8.onnx").stat().st_size < 0.5 * (out / "model.onnx").stat().st_size

    reloaded = AutoModel.from_pretrained(out, attn_implementation="eager").eval()
    names = input_names(reloaded, tok)
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    batch = check_batch(tok, names)
    ref = torch_hidden(student, batch)
    np.testing.assert_allclose(torch_hidden(reloaded, batch), ref, atol=1e-5)
    real = batch["attention_mask"].astype(bool)
    assert np.abs(onnx_hidden(out / "model.onnx", batch)[real] - ref[real]).max() < 1e-3
    card = (out / "README.md").read_text()
    assert f"`{arch.arch_id}`" in card and "22.71 M" in card
