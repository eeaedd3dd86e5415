"""Write a SmolLM3-3B-shaped GGUF in llama.cpp's Q4_K_M mix, random weights, with ``gguf``.

Shapes are SmolLM3-3B's (vocab 128256, hidden 2048, 36 layers, 16 heads, 4 KV heads,
intermediate 11008, tied head), written as architecture ``llama`` (NoPE costs nothing at
decode time). The tensor types follow llama.cpp's Q4_K_M recipe: Q4_K everywhere, Q6_K for
the token table (it doubles as the tied head) and for ``attn_v`` / ``ffn_down`` in the layers
llama.cpp gives more bits (the first and last eighth, and every third in between). The block
bytes are random with small fp16 scales, so the weights are of the size a real model has; the
file decodes at the same speed as a real one (nothing here depends on the values). The
vocabulary is placeholder tokens. About 1.9 GB, written in well under a minute.

Usage::

    python benchmarks/make_q4km_gguf.py /tmp/smollm3-3b-shape.Q4_K_M.gguf
    python benchmarks/make_q4km_gguf.py /tmp/smollm2-shape.Q4_1.gguf --shape smollm2-135m --q4-1
    python benchmarks/make_q4km_gguf.py /tmp/smollm3-3b-shape.F16.gguf --f16   # for llama-quantize
"""

from __future__ import annotations

import argparse

import gguf
import numpy as np

T = gguf.GGMLQuantizationType
SHAPES = {  # vocab, hidden, heads, kv heads, intermediate, layers
    "smollm3-3b": (128256, 2048, 16, 4, 11008, 36),
    "smollm2-135m": (49152, 576, 9, 3, 1536, 30),
}


def blocks(qtype: T, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random blocks (rows, bytes per row) whose fp16 scales keep weights near +-0.05."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = rows * cols // block
    data = rng.integers(0, 256, (n, size), dtype=np.uint8)
    if qtype in (T.Q4_0, T.Q4_1, T.Q8_0):  # d (and Q4_1's m) at bytes 0..3
        data[:, 0:2] = np.array([3e-3], np.float16).view(np.uint8)
        if qtype == T.Q4_1:
            data[:, 2:4] = np.array([-2.4e-2], np.float16).view(np.uint8)
    elif qtype == T.Q4_K:  # d, dmin at bytes 0..3: w = d * sc * q - dmin * m, sc, m < 64, q < 16
        data[:, 0:2] = np.array([5e-5], np.float16).view(np.uint8)
        data[:, 2:4] = np.array([2.5e-4], np.float16).view(np.uint8)
    elif qtype == T.Q6_K:  # d at bytes 208..209: w = d * sc * (q - 32), sc int8
        data[:, 208:210] = np.array([1.2e-5], np.float16).view(np.uint8)
    return data.reshape(rows, -1)


def more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits(i, n) for attn_v / ffn_down in Q4_K_M."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="smollm3-3b")
    ap.add_argument("--layers", type=int, help="fewer layers than the shape has (for checks)")
    ap.add_argument(
        "--q4-1", action="store_true", help="SmolLM2's file types instead: Q4_1, Q8_0 table"
    )
    ap.add_argument(
        "--f16", action="store_true", help="every matrix F16 (random, std 0.02), to quantize"
    )
    args = ap.parse_args()
    V, D, H, KV, F, L = SHAPES[args.shape]
    args.layers = args.layers or L
    HD = D // H
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(args.out, "llama")
    w.add_context_length(65536)
    w.add_embedding_length(D)
    w.add_block_count(args.layers)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_rope_dimension_count(HD)
    w.add_rope_freq_base(5_000_000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(V)
    kind = gguf.LlamaFileType.MOSTLY_Q4_1 if args.q4_1 else gguf.LlamaFileType.MOSTLY_Q4_K_M
    if args.f16:
        kind = gguf.LlamaFileType.MOSTLY_F16
    w.add_file_type(kind)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(["<t0>", "<t1>", "<", "t", "<t"] + [f"<t{i}>" for i in range(5, V)])
    w.add_token_types([gguf.TokenType.NORMAL] * V)
    w.add_token_merges(["< t"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")

    def add(name: str, qtype: T, rows: int, cols: int) -> None:
        if args.f16:
            w.add_tensor(
                name, (rng.standard_normal((rows, cols), np.float32) * 0.02).astype(np.float16)
            )
            return
        w.add_tensor(name, blocks(qtype, rows, cols, rng), raw_dtype=qtype)

    low = T.Q4_1 if args.q4_1 else T.Q4_K
    add("token_embd.weight", T.Q8_0 if args.q4_1 else T.Q6_K, V, D)
    w.add_tensor("output_norm.weight", np.ones(D, dtype=np.float32))
    for i in range(args.layers):
        p = f"blk.{i}."
        hi = T.Q6_K if more_bits(i, args.layers) and not args.q4_1 else low
        w.add_tensor(p + "attn_norm.weight", np.ones(D, dtype=np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(D, dtype=np.float32))
        add(p + "attn_q.weight", low, D, D)
        add(p + "attn_k.weight", low, KV * HD, D)
        add(p + "attn_v.weight", hi, KV * HD, D)
        add(p + "attn_output.weight", low, D, D)
        add(p + "ffn_gate.weight", low, F, D)
        add(p + "ffn_up.weight", low, F, D)
        add(p + "ffn_down.weight", hi, D, F)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", args.out)


if __name__ == "__main__":
    main()
