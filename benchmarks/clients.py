"""Client agreement: what each client a user serves an export with returns, against kdnas's own PyTorch numbers.

For every export dir given: sentence-transformers (`SentenceTransformer(dir).encode`), onnxruntime on
model.onnx and model-int8.onnx (token states over real tokens, and the graph's `sentence_embedding`), each as
max abs difference and lowest cosine to PyTorch (`kdnas.export.clients.check_clients`). Reports, does not assert.

    python benchmarks/clients.py EXPORT_DIR [EXPORT_DIR ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exports", nargs="+", help="dirs written by `kdnas export`")
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()

    from transformers import AutoConfig

    from kdnas.export.clients import TEXTS, check_clients

    table = {}
    print(
        f"{len(TEXTS)} sentences, padded batch; reference: PyTorch (transformers AutoModel + kdnas pooling)"
    )
    for d in a.exports:
        width = AutoConfig.from_pretrained(d).hidden_size
        dense = (Path(d) / "2_Dense").is_dir()
        print(f"\n{d}  (hidden {width}{', Dense into the teacher width' if dense else ''})")
        print(f"  {'client':<30} {'output':<20} {'max abs diff':>12} {'min cosine':>12}")
        rows = check_clients(d)
        for c in rows:
            print(f"  {c.client:<30} {c.output:<20} {c.max_abs_diff:>12.2e} {c.min_cosine:>12.6f}")
        table[d] = [c.to_dict() for c in rows]
    if a.out:
        Path(a.out).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
