"""Cost features of an arch at a shape (FLOPs, bytes moved, op counts) for the latency predictor and fake backend.

Counted per component (GEMMs, attention, element-wise, embeddings) so the predictor can weigh each on its own.
"""

from __future__ import annotations

from kdnas.space.arch import Arch

# Order is the predictor's feature order (the constant comes first).
FEATURES = (
    "const",  # per forward pass: Python dispatch, embedding setup
    "layers",  # per layer: fixed op-launch overhead
    "gemm_gflop",  # dense projections (QKV, output, FFN), GFLOP
    "gemm_mb",  # bytes those GEMMs read and write (weights + activations), MB
    "gemm_narrow",  # GEMM GFLOP weighted by 256/width: narrow matrices run below peak
    "attn_gflop",  # QK^T and AV, GFLOP
    "attn_mb",  # score/probability tensors written and read, MB
    "elem_mb",  # element-wise traffic (bias, GELU, LayerNorm, residuals), MB
    "head_ops",  # small per-head matmuls (batch x heads x layers), thousands
    "embed_mb",  # embedding gather + LayerNorm, MB
)


def arch_features(arch: Arch, *, batch_size: int, seq_len: int) -> dict[str, float]:
    """Cost features of one forward pass of `arch` on (batch_size, seq_len) tokens, fp32."""
    b, s, L = batch_size, seq_len, arch.num_layers
    H, A, F = arch.hidden_size, arch.num_heads, arch.ffn_size
    t = b * s  # tokens
    if arch.family == "mobilebert":
        B = arch.bottleneck_size or H
        S = arch.num_ffn_stacked or 1
        # input/output bottleneck (H<->B), shared QK bottleneck, Q K V O at width B, S FFNs B->F->B
        gemm_macs = t * (2 * H * B + H * B + 4 * B * B + S * 2 * B * F)
        weights = 2 * H * B + H * B + 4 * B * B + S * 2 * B * F
        acts = t * (2 * H + 2 * B + 8 * B + S * (2 * B + 2 * F))
        width, attn_w = B, B
        elem = t * (S * (F + 6 * B) + 4 * H + 6 * B)
    else:
        gemm_macs = t * (4 * H * H + 2 * H * F)
        weights = 4 * H * H + 2 * H * F
        acts = t * (H * 4 + H * 4 + H + F + F + H)  # inputs and outputs of the six GEMMs
        width, attn_w = H, H
        elem = t * (2 * F + 10 * H)  # bias+GELU on F, biases, two LayerNorms, two residual adds
    gemm_gflop = L * 2 * gemm_macs / 1e9
    return {
        "const": 1.0,
        "layers": float(L),
        "gemm_gflop": gemm_gflop,
        "gemm_mb": L * 4 * (weights + acts) / 1e6,
        "gemm_narrow": gemm_gflop * 256 / max(width, 1),
        "attn_gflop": L * 2 * 2 * b * s * s * attn_w / 1e9,
        "attn_mb": L * 4 * b * A * s * s * 4 / 1e6,  # scores written, softmax read+write, read by AV
        "elem_mb": L * 4 * elem / 1e6,
        "head_ops": L * b * A / 1e3,
        "embed_mb": 4 * t * H * 4 / 1e6,
    }


def forward_flops(arch: Arch, *, seq_len: int, batch_size: int = 1) -> float:
    """FLOPs of one forward pass (GEMMs + attention), the compute lower bound's numerator."""
    f = arch_features(arch, batch_size=batch_size, seq_len=seq_len)
    return (f["gemm_gflop"] + f["attn_gflop"]) * 1e9
