"""What each client a user serves an export with gets, against kdnas's own numbers: transformers,
sentence-transformers, onnxruntime (token states and the graph's sentence embedding, fp32 and int8).

The reference is PyTorch through transformers: token states of `AutoModel`, and the sentence embedding pooled,
projected (the export's Dense, when narrower than the teacher) and normalised as the export's pooling config says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kdnas.errors import KdnasError

TEXTS = (
    "The river flows through the old town and into the sea.",
    "A goal in the last minute won the cup final.",
    "Shares fell after the company reported lower profits.",
    "Hello!",
    "The committee will publish its report on the new railway line next spring, after the consultation.",
)


@dataclass
class ClientCheck:
    client: str
    """Who loaded the export, and what it returned."""
    output: str
    """token states [B, S, H] (real tokens only) or sentence embedding [B, D]."""
    max_abs_diff: float
    min_cosine: float
    """Lowest cosine over real tokens (token states) or sentences (embeddings)."""
    available: bool = True
    """False when the client's package is not installed (then the figures are NaN)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _compare(a: Any, b: Any, mask: Any = None) -> tuple[float, float]:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise KdnasError(f"client output shape {a.shape} differs from kdnas's {b.shape}")
    if mask is not None:
        keep = np.asarray(mask).astype(bool)
        a, b = a[keep], b[keep]  # [N real tokens, H]
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)
    return float(np.abs(a - b).max()), float(cos.min())


def check_clients(export_dir: str | Path, texts: tuple[str, ...] = TEXTS) -> list[ClientCheck]:
    """Load the export with every client that is installed and compare what it returns with kdnas's reference."""
    import importlib.util

    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    from kdnas.models.pooling import Pooling, load_dense_weights, pool, read_pooling

    d = Path(export_dir)
    if not (d / "config.json").is_file():
        raise KdnasError(
            f"{d}: not an exported model folder (no config.json); give a dir `kdnas export` wrote"
        )
    tok = AutoTokenizer.from_pretrained(str(d))
    model = AutoModel.from_pretrained(str(d), attn_implementation="eager").eval()
    batch = tok(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
    mask = batch["attention_mask"].numpy()
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # [B, S, H]
    out: list[ClientCheck] = []
    pooling = read_pooling(d)
    ref_emb = None
    if pooling is not None:
        x = pool(hidden, batch["attention_mask"], Pooling(mode=pooling.mode))  # [B, H]
        dense = load_dense_weights(d)
        if dense is not None:
            x = x @ dense[0].T + dense[1]  # [B, D]
        ref_emb = (torch.nn.functional.normalize(x, dim=-1) if pooling.normalize else x).numpy()
    ref_hidden = hidden.numpy()

    if pooling is not None:
        if importlib.util.find_spec("sentence_transformers") is None:
            out.append(
                ClientCheck("sentence-transformers", "sentence embedding", float("nan"), float("nan"), False)
            )
        else:
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(str(d), device="cpu")
            got = st.encode(list(texts), batch_size=len(texts), convert_to_numpy=True)
            out.append(ClientCheck("sentence-transformers", "sentence embedding", *_compare(got, ref_emb)))
    if importlib.util.find_spec("onnxruntime") is None:
        return out
    import onnxruntime as ort

    for f in ("model.onnx", "model-int8.onnx"):
        if not (d / f).is_file():
            continue
        sess = ort.InferenceSession(str(d / f), providers=["CPUExecutionProvider"])
        feed = {i.name: batch[i.name].numpy().astype(np.int64) for i in sess.get_inputs()}
        names = [o.name for o in sess.get_outputs()]
        res = dict(zip(names, sess.run(names, feed)))
        out.append(
            ClientCheck(
                f"onnxruntime {f}", "token states", *_compare(res["last_hidden_state"], ref_hidden, mask)
            )
        )
        if "sentence_embedding" in res and ref_emb is not None:
            out.append(
                ClientCheck(
                    f"onnxruntime {f}", "sentence embedding", *_compare(res["sentence_embedding"], ref_emb)
                )
            )
    return out
