"""Transcripts: exact round trip, atomic writes, refusal of bad files, the autosave folder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smolchat.chat import transcript as tr
from smolchat.chat.paths import default_transcripts_dir, user_data_dir
from smolchat.chat.transcript import (
    MAX_TRANSCRIPT_BYTES,
    Transcript,
    TranscriptStore,
    read_transcript,
    render_transcript,
    slugify,
    write_transcript,
)
from smolchat.errors import TranscriptError

ROOT = Path(__file__).resolve().parents[1]

# pieces that look like the format's own structure, Markdown or HTML
NASTY = [
    "## Turn 1",
    "### User",
    "# smolchat · x",
    "```",
    "````python",
    "~~~",
    "<details><summary>Reasoning</summary>",
    "</details>",
    "<!--",
    "-->",
    "<!-- smolchat:0123456789abcdef end -->",
    '<!-- smolchat:0123456789abcdef text {"field":"content"} -->',
    "<!-- smolchat-transcript v1 0123456789abcdef -->",
    "<!-- smolchat:0123456789abcdef meta {} -->",
    "<script>alert(1)</script>",
    "&amp; &lt;",
    "---",
    "\n",
    "\r\n",
    "\r",
    "\x00",
    "\ufeff",
    "\u2028",
    "\ud800",  # a lone surrogate
    " ",
    "\\",
    "é 日本 🍎",
    "<think>",
    "</think>",
    "<|im_end|>",
]

texts = st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=12)), max_size=8).map("".join)
stats = st.fixed_dictionaries(
    {
        "prompt_tokens": st.integers(0, 10**6),
        "generated_tokens": st.integers(0, 10**6),
        "decode_s": st.floats(0, 1e6, allow_nan=False),
        "ttft_s": st.floats(0, 1e6, allow_nan=False),
    }
)
user_msg = st.builds(lambda c: {"role": "user", "content": c}, texts)
assistant_msg = st.builds(
    lambda c, r, s, f: {
        "role": "assistant",
        "content": c,
        "reasoning": r,
        "stats": s,
        "finish_reason": f,
    },
    texts,
    texts,
    stats,
    st.sampled_from(["stop", "length", "cancelled", "error"]),
)
transcripts = st.builds(
    Transcript,
    messages=st.lists(st.one_of(user_msg, assistant_msg), max_size=6),
    system_prompt=st.one_of(st.none(), texts),
    settings=st.fixed_dictionaries(
        {"temperature": st.floats(0, 10, allow_nan=False), "thinking": st.booleans()}
    ),
    model=texts,
    created=st.just("2025-07-10T14:03:22+02:00"),
)


def sample(**over) -> Transcript:
    data = Transcript(
        messages=[
            {"role": "user", "content": "What is the capital of France?"},
            {
                "role": "assistant",
                "content": "Paris.\n\n```python\nprint('x')\n```",
                "reasoning": "The user asks about France.",
                "finish_reason": "stop",
                "stats": {"generated_tokens": 12, "decode_s": 0.5, "ttft_s": 0.1},
            },
        ],
        system_prompt="Be brief.",
        settings={"temperature": 0.6, "top_p": 0.95, "seed": None, "thinking": True},
        model="HuggingFaceTB/SmolLM3-3B",
        created="2025-07-10T14:03:22+02:00",
    )
    for k, v in over.items():
        setattr(data, k, v)
    return data


# --- round trip -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=transcripts)
def test_round_trip_is_exact(data: Transcript) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write_transcript(Path(folder) / "t.md", data)
        back = read_transcript(path)
    assert back.messages == data.messages
    assert back.system_prompt == data.system_prompt
    assert back.settings == data.settings
    assert back.model == data.model
    assert back.created == data.created


def test_round_trip_of_every_nasty_piece_at_once(tmp_path: Path) -> None:
    text = "".join(NASTY) + "\n" + "\n".join(NASTY)
    data = sample(
        messages=[
            {"role": "user", "content": text},
            {"role": "assistant", "content": text, "reasoning": text, "finish_reason": "stop"},
        ],
        system_prompt=text,
    )
    back = read_transcript(write_transcript(tmp_path / "n.md", data))
    assert back.messages == data.messages
    assert back.system_prompt == text


def test_nonce_is_chosen_absent_from_the_texts(tmp_path: Path, monkeypatch) -> None:
    taken = "feedfacecafebeef"
    content = f"<!-- smolchat:{taken} end -->\n<!-- smolchat:{taken} message {{}} -->"
    draws = iter([taken, "0123456789abcdef"])
    monkeypatch.setattr(tr.secrets, "token_hex", lambda n: next(draws))
    data = sample(messages=[{"role": "user", "content": content}])
    text = render_transcript(data)
    assert text.startswith("<!-- smolchat-transcript v1 0123456789abcdef -->\n")
    path = tmp_path / "x.md"
    path.write_text(text, encoding="utf-8")
    assert read_transcript(path).messages == data.messages


def test_editor_line_endings_still_load(tmp_path: Path) -> None:
    data = sample()
    path = write_transcript(tmp_path / "a.md", data)
    crlf = path.read_bytes().replace(b"\n", b"\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + crlf)  # BOM + CRLF, as some editors save
    assert read_transcript(path).messages == data.messages


def test_an_edit_of_the_visible_text_is_honoured(tmp_path: Path) -> None:
    path = write_transcript(tmp_path / "e.md", sample())
    path.write_text(path.read_text().replace("What is the capital", "What is the size"))
    assert read_transcript(path).messages[0]["content"] == "What is the size of France?"


# --- the human side -----------------------------------------------------------------------


def test_markdown_has_header_sections_details_and_stats(tmp_path: Path) -> None:
    text = write_transcript(tmp_path / "h.md", sample()).read_text()
    assert "- **Model:** `HuggingFaceTB/SmolLM3-3B`" in text
    assert "- **Started:** 2025-07-10T14:03:22+02:00" in text
    assert "- **Thinking:** on" in text
    assert "temperature 0.6 · top_p 0.95 · seed none" in text
    assert "## System prompt" in text and "\nBe brief.\n" in text
    assert "## Turn 1" in text and "### User" in text and "### Assistant" in text
    assert "<details><summary>Reasoning</summary>" in text
    assert text.index("The user asks") < text.index("</details>") < text.index("Paris.")
    assert re.search(r"\*stop · 12 tokens · 22\.0 tok/s · first token 0\.10 s\*", text)
    # every machine marker is an HTML comment on a line of its own
    for line in text.splitlines():
        if "smolchat:" in line:
            assert line.startswith("<!-- ") and line.endswith(" -->")


def test_an_open_code_fence_is_closed_for_display(tmp_path: Path) -> None:
    cut = "Here:\n````python\nprint(1)"  # a reply cancelled inside a code block
    data = sample(messages=[{"role": "user", "content": "hi"}, {"role": "assistant",
                 "content": cut, "finish_reason": "cancelled"}])  # fmt: skip
    text = write_transcript(tmp_path / "f.md", data).read_text()
    after = text.split(cut, 1)[1]
    assert re.match(r"\n````\n<!-- smolchat:[0-9a-f]{16} end -->", after)  # closed, then marker
    code = [t for t in _markdown(text) if t.type == "fence" and "print(1)" in t.content]
    assert code and code[0].content == "print(1)\n"  # the marker is not in the code block
    assert read_transcript(tmp_path / "f.md").messages[1]["content"] == cut


# --- rendered by a CommonMark parser ---------------------------------------------------------


def _markdown(text: str) -> list:
    """Block tokens, with inline children flattened in, of ``text`` as CommonMark."""
    from markdown_it import MarkdownIt

    out = []
    for token in MarkdownIt("commonmark").parse(text):
        out.append(token)
        out.extend(token.children or [])
    return out


def _visible(tokens: list) -> str:
    """What a reader sees as text (raw HTML and comments left out)."""
    kinds = ("text", "code_inline", "fence", "code_block")
    return "\n".join(t.content for t in tokens if t.type in kinds)


def _typed(text: str) -> bool:
    return not any(c in text for c in "\r\x00") and not tr._has_lone_surrogate(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=transcripts)
def test_rendered_markdown_shows_user_text_as_typed_and_never_a_marker(data: Transcript) -> None:
    text = render_transcript(data)
    tokens = _markdown(text)
    nonce = text.split()[3]  # of the first line, <!-- smolchat-transcript v1 NONCE -->
    assert nonce not in _visible(tokens)  # no machine marker inside a code block or text
    fences = [t.content for t in tokens if t.type == "fence"]
    for msg in data.messages:
        content = msg["content"]
        if msg["role"] == "user" and content and _typed(content):
            assert content + "\n" in fences  # a code block holding exactly the text typed
    if data.system_prompt and _typed(data.system_prompt):
        assert data.system_prompt + "\n" in fences


@pytest.mark.parametrize(
    "first",
    [
        "Show <think> and **bold** and # not a header",
        "what's 2*3? and a_b_c",
        "`code` & [link](x) | ~~strike~~ \\ back",
        "plain words only",
    ],
)
def test_title_is_the_text_typed_without_backslashes(first: str) -> None:
    text = render_transcript(sample(messages=[{"role": "user", "content": first}]))
    heading = text.splitlines()[1]
    assert heading.count("\\") == first.count("\\")  # nothing added
    tokens = _markdown(text)
    start = next(i for i, t in enumerate(tokens) if t.type == "heading_open")
    inline = tokens[start + 1]
    shown = "".join(c.content for c in inline.children if c.type in ("text", "code_inline"))
    assert shown == f"smolchat · {first}"


def test_user_markdown_and_tags_render_as_typed(tmp_path: Path) -> None:
    typed = "<think>\n# not a header\n**not bold** <b>x</b>\n```\nnot code\n```"
    data = sample(messages=[{"role": "user", "content": typed}], system_prompt="Be *brief*.")
    path = write_transcript(tmp_path / "u.md", data)
    tokens = _markdown(path.read_text())
    assert typed + "\n" in [t.content for t in tokens if t.type == "fence"]
    assert "Be *brief*.\n" in [t.content for t in tokens if t.type == "fence"]
    assert not [t for t in tokens if t.type in ("strong_open", "html_inline") and t.level > 0]
    assert read_transcript(path).messages[0]["content"] == typed


def test_transcripts_written_by_0_1_0_still_load() -> None:
    old = read_transcript(ROOT / "tests/fixtures/transcripts/written-by-0.1.0.md")
    assert old.system_prompt == "Be *brief*."
    assert [m["content"] for m in old.messages] == [
        "Show <think> and **bold** and # not a header",
        "Here:\n````python\nprint(1)",
        "thanks",
        "You're welcome.",
    ]
    assert old.messages[1]["reasoning"] == "They want code."


# --- atomic writes --------------------------------------------------------------------------


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fail_at", ["replace", "fsync", "write"])
def test_failed_write_leaves_the_old_file_intact(tmp_path: Path, monkeypatch, fail_at) -> None:
    path = write_transcript(tmp_path / "chat.md", sample())
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if fail_at == "write":
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])  # half of it lands, then the disk is full
                raise OSError(28, "No space left on device")

        monkeypatch.setattr(tr.os, "fdopen", lambda *a, **k: HalfWriter(real_fdopen(*a, **k)))
    else:
        monkeypatch.setattr(tr.os, fail_at, boom)
    changed = sample(system_prompt="Something else entirely. " * 100)
    with pytest.raises(TranscriptError, match="No space left on device") as info:
        write_transcript(path, changed)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before
    assert read_transcript(path).system_prompt == "Be brief."
    assert _no_temp_files(tmp_path)


def test_writes_are_private_by_default(tmp_path: Path) -> None:
    path = write_transcript(tmp_path / "p.md", sample())
    if os.name == "posix":
        assert path.stat().st_mode & 0o777 == 0o600


KILLER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from smolchat.chat.transcript import Transcript, write_transcript
    path = Path(sys.argv[1])
    big = "x" * 2_000_000
    n = 0
    print("ready", flush=True)
    while True:
        n += 1
        msgs = [{"role": "user", "content": f"version {n} " + big}]
        write_transcript(path, Transcript(messages=msgs, model="m"))
    """
)


def test_sigkill_during_writes_never_leaves_a_broken_file(tmp_path: Path) -> None:
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("no SIGKILL on this platform")
    path = tmp_path / "k.md"
    write_transcript(path, Transcript(messages=[{"role": "user", "content": "version 0"}]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for delay in (0.05, 0.2, 0.5):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLER, str(path)], stdout=subprocess.PIPE, env=env
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = read_transcript(path)  # always a complete version
        # the first version (written above) or any complete later one, never a mix
        assert re.fullmatch(r"version \d+( x{2000000})?", data.messages[0]["content"])
    assert [p.name for p in TranscriptStore(tmp_path).list()] == ["k.md"]


# --- refusing bad files ---------------------------------------------------------------------


def _good(tmp_path: Path) -> str:
    return write_transcript(tmp_path / "g.md", sample()).read_text()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: "# just notes\n", "first line"),
        (lambda t: t.replace(" meta {", " meta {oops", 1), "broken marker data"),
        (
            lambda t: t.replace(' message {"role":"user"', ' message {"role":"robot"', 1),
            "bad message",
        ),  # fmt: skip
        (lambda t: t.rsplit("<!-- smolchat:", 1)[0], "not closed"),
        (lambda t: t + re.findall(r".* end -->\n", t)[0], "unexpected end marker"),
        (lambda t: t.replace("v1", "v9", 1), "newer smolchat"),
        (lambda t: "\n".join(ln for ln in t.split("\n") if " meta " not in ln), "header"),
    ],
)
def test_malformed_files_are_refused_with_one_line(tmp_path: Path, mutate, expected) -> None:
    bad = tmp_path / "bad.md"
    bad.write_text(mutate(_good(tmp_path)), encoding="utf-8")
    with pytest.raises(TranscriptError, match=expected) as info:
        read_transcript(bad)
    assert "\n" not in str(info.value)


def test_binary_missing_folder_and_huge_files_are_refused(tmp_path: Path) -> None:
    binary = tmp_path / "b.md"
    binary.write_bytes(b"<!-- smolchat-transcript v1 0123456789abcdef -->\n\xff\xfe")
    with pytest.raises(TranscriptError, match="not UTF-8"):
        read_transcript(binary)
    with pytest.raises(TranscriptError, match="no such transcript"):
        read_transcript(tmp_path / "missing.md")
    with pytest.raises(TranscriptError, match="is a folder"):
        read_transcript(tmp_path)
    huge = tmp_path / "huge.md"
    with open(huge, "wb") as f:  # sparse: costs no disk
        f.write(_good(tmp_path).encode())
        f.truncate(MAX_TRANSCRIPT_BYTES + 1)
    with pytest.raises(TranscriptError, match="over 20 MB are refused") as info:
        read_transcript(huge)
    assert "\n" not in str(info.value)


# --- the autosave folder --------------------------------------------------------------------


def test_default_folder_follows_xdg_and_home(monkeypatch, tmp_path: Path) -> None:
    if sys.platform in ("win32", "darwin"):
        pytest.skip("XDG layout is the Linux default")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_transcripts_dir() == tmp_path / "xdg" / "smolchat" / "transcripts"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_data_dir() == tmp_path / "home" / ".local" / "share" / "smolchat"
    assert TranscriptStore().folder == tmp_path / "home" / ".local" / "share" / "smolchat" / (
        "transcripts"
    )


def test_store_names_latest_and_ignores_strangers(tmp_path: Path) -> None:
    from datetime import datetime

    store = TranscriptStore(tmp_path / "t")
    assert store.latest() is None  # the folder does not even exist yet
    started = datetime(2025, 7, 10, 14, 3, 22)
    first = store.new_path(started, "Qu'est-ce que la «physique» ? Explain it!")
    assert first.name == "2025-07-10_140322_qu-est-ce-que-la-physique-explain-it.md"
    write_transcript(first, sample())
    second = store.new_path(started, "Qu'est-ce que la «physique» ? Explain it!")
    assert second.name.endswith("-2.md")
    write_transcript(second, sample())
    os.utime(first, (time.time() + 10, time.time() + 10))  # first was written last
    (store.folder / "notes.md").write_text("# not a transcript\n")
    (store.folder / ".x.md.123.tmp").write_text("partial")
    assert store.latest() == first
    assert store.list() == [first, second]
    assert store.contains(first) and not store.contains(tmp_path / "elsewhere.md")


def test_slugify() -> None:
    assert slugify("Hello, World!") == "hello-world"
    assert slugify("日本語") == "chat"
    assert slugify("a" * 100) == "a" * 40
    assert slugify("one two three four five six seven eight nine ten") == (
        "one-two-three-four-five-six-seven-eight"
    )
