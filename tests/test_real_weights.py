"""Real weights: SmolLM2-135M-Instruct from its GGUF, against transformers on the same file."""

from __future__ import annotations

import pytest
import torch

import smolchat
from smolchat import SamplingParams

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def engine(smollm2_gguf):
    return smolchat.load(str(smollm2_gguf), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference(smollm2_gguf):
    import transformers

    kw = dict(gguf_file=smollm2_gguf.name)
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, **kw)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, dtype=torch.float32, **kw
    )
    return tok, model.eval()


def test_chat_token_ids_equal_transformers(engine, reference):
    tok, _ = reference
    ours = engine.tokenizer.encode_chat(QUESTION, add_generation_prompt=True)
    theirs = tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True)
    if isinstance(theirs, dict) or hasattr(theirs, "input_ids"):
        theirs = theirs["input_ids"]
    assert ours == list(theirs)


def test_greedy_answer_mentions_paris_and_equals_transformers(engine, reference):
    tok, model = reference
    ids = engine.tokenizer.encode_chat(QUESTION)
    events = list(engine.generate(ids, sampling=SamplingParams(temperature=0.0), max_new_tokens=32))
    ours = [e.token_id for e in events if e.token_id is not None]
    text = "".join(e.text for e in events)
    assert "Paris" in text
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            max_new_tokens=32,
            do_sample=False,
            eos_token_id=engine.eos_token_ids,
        )
    theirs = out[0, len(ids) :].tolist()
    assert ours == theirs, (tok.decode(ours), tok.decode(theirs))


def test_logits_match_transformers(engine, reference):
    _, model = reference
    ids = engine.tokenizer.encode_chat(QUESTION)
    with torch.inference_mode():
        theirs = model(torch.tensor([ids])).logits[0]
    assert (engine.logits(ids) - theirs).abs().max().item() < 2e-3
