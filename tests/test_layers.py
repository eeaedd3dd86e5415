"""The layering rules of GUIDE section 2, checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> None:
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, timeout=300)


def test_load_and_generate_never_import_textual_or_typer(tiny_model):
    run(
        f"""
        import sys
        import smolchat
        engine = smolchat.load({str(tiny_model)!r}, device="cpu", dtype="float32")
        ids = engine.tokenizer.encode("Hello")
        events = list(engine.generate(ids, sampling=smolchat.SamplingParams(temperature=0.0),
                                      max_new_tokens=4))
        assert events[-1].finish_reason in ("stop", "length"), events[-1]
        for mod in ("textual", "typer"):
            assert mod not in sys.modules, mod + " was imported"
        """
    )


def test_model_and_engine_never_import_chat():
    run(
        """
        import sys
        import smolchat.engine.engine, smolchat.model.weights, smolchat.model.hub
        bad = [m for m in sys.modules if m.startswith("smolchat.chat")]
        assert not bad, bad
        """
    )
