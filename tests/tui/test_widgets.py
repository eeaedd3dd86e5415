"""Unit tests of widget helpers that need no running app."""

from __future__ import annotations

from smolchat.engine.types import GenerationStats
from smolchat.tui.widgets.conversation import code_blocks
from smolchat.tui.widgets.status import StatusInfo

INFO = StatusInfo(
    model="HuggingFaceTB/SmolLM3-3B", where="cuda bfloat16", thinking=True,
    temperature=0.6, top_p=0.95, context_used=1234, context_limit=65536,
    last_stats=GenerationStats(generated_tokens=11, ttft_s=0.125, decode_s=0.1),
)  # fmt: skip


def test_status_line_shows_everything_when_wide() -> None:
    line = INFO.render_line(200)
    assert line == (
        "SmolLM3-3B │ cuda bfloat16 │ think │ T 0.6 │ top_p 0.95 │ "
        "ctx 1,234/65,536 │ 100.0 tok/s │ TTFT 0.12s"
    )


def test_status_line_drops_the_least_important_fields_first() -> None:
    line = INFO.render_line(80)
    assert len(line) <= 80
    assert "top_p" not in line and "TTFT" not in line
    assert line.startswith("SmolLM3-3B │ cuda bfloat16 │ think │ T 0.6")
    assert line.endswith("ctx 1,234/65,536 │ 100.0 tok/s")
    narrow = INFO.render_line(40)
    assert "ctx 1,234/65,536" in narrow and "100.0 tok/s" in narrow and len(narrow) <= 40


def test_status_line_while_generating() -> None:
    busy = StatusInfo(**{**INFO.__dict__, "busy": True})
    assert busy.render_line(200).endswith("● generating")


def test_code_blocks_are_found_in_fences_and_indents() -> None:
    text = "Intro\n\n```python\nx = 1\n```\n\nThen:\n\n    indented\n\n~~~\nraw\n~~~\n"
    assert code_blocks(text) == ["x = 1\n", "indented\n", "raw\n"]
    assert code_blocks("no code here") == []


def test_status_line_at_80_columns_keeps_the_temperature_for_a_long_model_name() -> None:
    """The real SmolLM2 GGUF: a long file name and backend description used to push out the
    temperature (and the name) at 80 columns; they take their short spelling first now."""
    gguf = StatusInfo(
        model="/models/SmolLM2-135M-Instruct.Q4_1.gguf", where="cpu int4 (GGUF Q4_1)",
        thinking=None, temperature=0.6, top_p=0.95, context_used=55, context_limit=8192,
        last_stats=GenerationStats(generated_tokens=17, ttft_s=2.66, decode_s=4.0),
    )  # fmt: skip
    line = gguf.render_line(78)  # an 80-column terminal
    assert line == "SmolLM2-135M-Instruct.Q… │ cpu int4 │ T 0.6 │ ctx 55/8,192 │ 4.0 tok/s"
    idle = StatusInfo(**{**gguf.__dict__, "last_stats": None})
    assert idle.render_line(78) == (
        "SmolLM2-135M-Instruct.Q… │ cpu int4 │ T 0.6 │ top_p 0.95 │ ctx 55/8,192"
    )
    wide = gguf.render_line(198)  # nothing shortened when there is room
    assert wide.startswith("SmolLM2-135M-Instruct.Q4_1.gguf │ cpu int4 (GGUF Q4_1) │ T 0.6")
    assert wide.endswith("TTFT 2.66s")
    thinking = StatusInfo(**{**gguf.__dict__, "thinking": True})
    assert "│ think │ T 0.6 │" in thinking.render_line(78) and len(thinking.render_line(78)) <= 78


def test_status_line_shows_prefill_progress_while_busy() -> None:
    from smolchat.backend.types import PrefillProgress

    busy = StatusInfo(**{**INFO.__dict__, "busy": True, "prefill": PrefillProgress(1024, 4096)})
    assert busy.render_line(200).endswith("│ prefill 1,024/4,096")
    assert "generating" not in busy.render_line(200)
    assert busy.render_line(78).endswith("prefill 1,024/4,096")
