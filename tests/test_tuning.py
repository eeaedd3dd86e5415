"""The matvec tuner's on-disk cache (smolchat.engine.tuning): hit, miss, invalidation.

On the CPU the platform (GPU name, versions) is made up at the key level, and the timing of
candidates is replaced by a fixed table (there is no GPU to time on); the CUDA test at the end
runs the real tuner twice through the fast decoder.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from smolchat.engine.tuning import ENV_DIR, ENV_OFF, Platform, TuningCache, default_path

H200 = Platform(gpu="NVIDIA H200", capability="9.0", torch="2.11.0", triton="3.6.0")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_every_part_of_the_platform_is_in_the_key():
    keys = {H200.key()}
    for field, value in (
        ("gpu", "NVIDIA H100 80GB HBM3"),
        ("capability", "8.9"),
        ("torch", "2.12.0"),
        ("triton", "3.7.0"),
        ("bitsandbytes", "0.51.0"),
        ("kernels", H200.kernels + 1),
    ):
        keys.add(dataclasses.replace(H200, **{field: value}).key())
    assert len(keys) == 7


def test_a_stored_choice_survives_a_restart_and_only_for_its_platform(tmp_path):
    path = tmp_path / "cache" / "t.json"
    key = ((3072, 2048), torch.bfloat16, True, False, False)
    cache = TuningCache(path)
    assert cache.get(H200, key) is None
    cache.put(H200, key, (8, 512, 8), 7.5e-6)
    cache.put(H200, ("other",), "torch", 1e-5)
    cache.save()
    again = TuningCache(path)  # a new process reads the file
    assert again.get(H200, key) == ((8, 512, 8), 7.5e-6)
    assert again.get(H200, ("other",)) == ("torch", 1e-5)
    h100 = dataclasses.replace(H200, gpu="NVIDIA H100 80GB HBM3")
    assert again.get(h100, key) is None  # another GPU tunes again
    assert again.get(dataclasses.replace(H200, triton="3.7.0"), key) is None  # an upgrade too
    again.put(h100, key, (4, 512, 4), 9e-6)
    again.save()
    both = TuningCache(path)
    assert both.get(H200, key) == ((8, 512, 8), 7.5e-6)  # entries of other keys stay
    assert both.get(h100, key) == ((4, 512, 4), 9e-6)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"x": 3}'])
def test_a_damaged_file_is_ignored_and_rewritten(tmp_path, text):
    path = tmp_path / "t.json"
    path.write_text(text)
    cache = TuningCache(path)
    assert cache.get(H200, ("k",)) is None
    cache.put(H200, ("k",), (1, 2, 3), 1.0)
    cache.save()
    assert TuningCache(path).get(H200, ("k",)) == ((1, 2, 3), 1.0)
    json.loads(path.read_text())


def test_the_cache_lives_in_the_user_cache_folder_unless_told(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv(ENV_DIR, raising=False)
    monkeypatch.delenv(ENV_OFF, raising=False)
    assert default_path().parent == __import__("pathlib").Path(
        platformdirs.user_cache_dir("smolchat")
    )
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    assert default_path().parent == tmp_path
    monkeypatch.setenv(ENV_OFF, "1")
    assert default_path() is None
    TuningCache(None).save()  # off: nothing written, no error


@pytest.fixture
def kernels(monkeypatch):
    K = pytest.importorskip("smolchat.engine.kernels")
    monkeypatch.setattr(K, "_tuned", {})
    monkeypatch.setattr(K, "_tuned_s", {})
    return K


def test_tune_gemv_reads_a_hit_and_times_only_on_a_miss(kernels, tmp_path, monkeypatch):
    K = kernels
    timed: list = []
    fastest = K.GEMV_CONFIGS[3]

    def fake_time(fn, replays=5):  # the candidate's config, recovered from the closure
        cfg = fn.__defaults__[0]
        timed.append(cfg)
        return 1e-6 if cfg == fastest else 2e-6

    monkeypatch.setattr(K, "_time_graph", fake_time)
    w = [torch.zeros(64, 32, dtype=torch.bfloat16)]
    x = torch.zeros(32, dtype=torch.bfloat16)
    path = tmp_path / "t.json"
    cache = TuningCache(path)
    cfg, secs, hit = K.tune_gemv(x, w, cache=cache, platform=H200)
    assert (cfg, hit) == (fastest, False) and len(timed) == len(K.GEMV_CONFIGS) + 1
    cache.save()
    # a new process (empty in-memory choices), same platform: no timing at all
    monkeypatch.setattr(K, "_tuned", {})
    monkeypatch.setattr(K, "_tuned_s", {})
    timed.clear()
    cfg, secs, hit = K.tune_gemv(x, w, cache=TuningCache(path), platform=H200)
    assert (cfg, secs, hit) == (fastest, 1e-6, True) and timed == []
    assert K._tuned[K._key(w[0], None, False, None)] == fastest  # and the kernel uses it
    # another GPU: tuned again
    monkeypatch.setattr(K, "_tuned", {})
    monkeypatch.setattr(K, "_tuned_s", {})
    other = dataclasses.replace(H200, gpu="NVIDIA H100 80GB HBM3")
    cfg, secs, hit = K.tune_gemv(x, w, cache=TuningCache(path), platform=other)
    assert not hit and len(timed) == len(K.GEMV_CONFIGS) + 1


def test_the_fast_decoder_tunes_every_matvec_of_its_step(kernels, tmp_path, monkeypatch):
    """``FastDecoder._tune`` hands the tuner each matvec the Triton step runs (the model's
    decode weights), with the fusions the step uses; timing is the made-up table."""
    from smolchat.engine import tuning
    from smolchat.engine.fast import FastDecoder
    from tests.test_cache import load_model, make_engine
    from tests.tiny import build_smollm3

    K = kernels
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    monkeypatch.delenv(ENV_OFF, raising=False)
    monkeypatch.setattr(K, "_time_graph", lambda fn, replays=5: 1e-6)
    monkeypatch.setattr(tuning.Platform, "current", classmethod(lambda cls, dev: H200))
    folder = build_smollm3(tmp_path / "m", tie=False, with_tokenizer=False)
    model = load_model(folder, "cpu", torch.bfloat16)
    engine = make_engine(model)
    fast = FastDecoder(model, engine.cache, graphs=False, compile=False, kernels="triton")
    fast._tune()
    cfg = model.config
    c, h, kv, hd, inter = 64, cfg.num_attention_heads, cfg.num_key_value_heads, 16, 128
    bf16 = torch.bfloat16
    assert set(K._tuned) == {  # (shape, dtype, norm fused, gated, residual fused)
        (((h + 2 * kv) * hd, c), bf16, True, False, False),  # q/k/v after the input norm
        ((c, h * hd), bf16, False, False, True),  # o-proj + residual
        ((2 * inter, c), bf16, True, True, False),  # gate/up: norm, SiLU gate
        ((c, inter), bf16, False, False, True),  # down-proj + residual
        ((cfg.vocab_size, c), bf16, True, False, False),  # the head after the final norm
    }
    assert set(fast.tuning) == {"qkv", "o", "gate_up", "down", "head"}
    assert not fast.tuning_cached and "tune_s" in fast.timings


@cuda
def test_cuda_second_start_reads_the_tuning_cache_and_another_gpu_retunes(tmp_path, monkeypatch):
    from smolchat.engine import kernels as K
    from smolchat.engine import tuning
    from tests.test_cache import load_model, make_engine
    from tests.tiny import build_smollm3

    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    monkeypatch.delenv(ENV_OFF, raising=False)
    folder = build_smollm3(tmp_path / "m", hidden=256, intermediate=512, with_tokenizer=False)
    model = load_model(folder, "cuda", torch.bfloat16)

    def start() -> tuple[bool, float]:
        monkeypatch.setattr(K, "_tuned", {})  # as in a new process
        monkeypatch.setattr(K, "_tuned_s", {})
        engine = make_engine(model, fast=True)
        engine.warmup()
        return engine.fast.tuning_cached, engine.fast.timings["tune_s"]

    first, t_first = start()
    second, t_second = start()
    assert not first and second and t_second < t_first
    real = tuning.Platform.current
    monkeypatch.setattr(
        tuning.Platform,
        "current",
        classmethod(lambda cls, dev: dataclasses.replace(real(dev), gpu="another GPU")),
    )
    third, _ = start()
    assert not third
