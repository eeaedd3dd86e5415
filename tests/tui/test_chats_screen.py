"""The chat browser (Ctrl+L, /chats), /read and /preset in the real app (fake engine)."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input, OptionList

from smolchat.chat.config import Preset
from smolchat.chat.context import ChatContext, set_context
from smolchat.chat.transcript import Transcript, read_transcript, write_transcript
from smolchat.tui.screens.chats import ChatsScreen, RenameScreen
from smolchat.tui.screens.dialogs import ConfirmScreen
from smolchat.tui.widgets.conversation import UserMessage
from tests.test_library import make_chat
from tests.tui.conftest import make_app
from tests.tui.fake_engine import FakeEngine
from tests.tui.helpers import chat_screen, command, running, submit, texts, wait_for


def saved_chats(folder: Path) -> None:
    make_chat(folder, "2026-11-28_peru", "Tell me about Peru", reply="Lima is the capital.",
              age_s=300)  # fmt: skip
    data = Transcript(
        messages=[{"role": "user", "content": "What about zebras?"},
                  {"role": "assistant", "content": "Stripes.", "finish_reason": "stop"}],
        system_prompt="Talk like a zoologist.",
        settings={"temperature": 0.25, "thinking": False},
        model="fake/SmolLM3-test",
    )  # fmt: skip
    path = write_transcript(folder / "2026-11-29_zebra.md", data)
    import os
    import time

    os.utime(path, (time.time() - 200, time.time() - 200))
    make_chat(folder, "2026-11-30_new", "Newest one", age_s=100)


async def browser(pilot) -> ChatsScreen:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ChatsScreen))
    screen = pilot.app.screen
    assert isinstance(screen, ChatsScreen)
    await wait_for(pilot, lambda: screen.shown_query is not None)
    return screen


def titles(screen: ChatsScreen) -> list[str]:
    return [entry.title for entry, _ in screen.rows]


async def test_ctrl_l_lists_searches_as_you_type_and_enter_opens(tmp_path: Path) -> None:
    saved_chats(tmp_path)
    engine = FakeEngine()
    async with running(make_app(engine, transcripts=tmp_path)) as (pilot, notes):
        chat = await chat_screen(pilot)
        await pilot.press("ctrl+l")
        screen = await browser(pilot)
        assert titles(screen) == ["Newest one", "What about zebras?", "Tell me about Peru"]
        assert "Newest one" in str(screen.query_one("#chats-preview").render())
        await pilot.press("l", "i", "m", "a")  # search as you type: a word of a reply
        await wait_for(pilot, lambda: screen.shown_query == "lima")
        assert titles(screen) == ["Tell me about Peru"]
        assert screen.rows[0][1] is not None and screen.rows[0][1].where == "reply"
        for _ in range(4):
            await pilot.press("backspace")
        await wait_for(pilot, lambda: screen.shown_query == "")
        await pilot.press("down")  # the zebra chat
        preview = str(screen.query_one("#chats-preview").render())
        assert "Talk like a zoologist." in preview and "Stripes." in preview
        await pilot.press("enter")
        await wait_for(pilot, lambda: pilot.app.screen is chat)
        await pilot.pause()
        session = chat.session
        assert [m.content for m in session.messages] == ["What about zebras?", "Stripes."]
        assert session.system_prompt == "Talk like a zoologist."
        assert session.settings.sampling.temperature == 0.25
        assert session.settings.thinking is False
        assert [str(u.render()) for u in chat.query(UserMessage)] == ["What about zebras?"]
        assert any("Opened 2026-11-29_zebra.md" in t for t in texts(notes))
        # the next turn goes on from the opened chat (its prompt holds the old exchange)
        await submit(pilot, "and lions?")
        prompt = engine.tokenizer.decode(engine.calls[-1]["ids"])
        assert "Talk like a zoologist." in prompt and "What about zebras?" in prompt


async def test_f2_renames_and_f8_deletes_after_confirmation(tmp_path: Path) -> None:
    saved_chats(tmp_path)
    async with running(make_app(transcripts=tmp_path)) as (pilot, notes):
        await chat_screen(pilot)
        await pilot.press("ctrl+l")
        screen = await browser(pilot)
        await pilot.press("down", "down")  # Peru
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, RenameScreen))
        field = pilot.app.screen.query_one(Input)
        field.value = "Peru trip"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Peru trip" in titles(screen))
        assert read_transcript(tmp_path / "2026-11-28_peru.md").extra["title"] == "Peru trip"
        assert titles(screen)[2] == "Peru trip"  # its place in the list is kept
        await pilot.press("up", "up")  # Newest one
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        await pilot.press("n")  # no: nothing happens
        await pilot.pause()
        assert (tmp_path / "2026-11-30_new.md").exists()
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: "Newest one" not in titles(screen))
        assert not (tmp_path / "2026-11-30_new.md").exists()
        assert (tmp_path / ".trash" / "2026-11-30_new.md").exists()
        assert any("smolchat chats --restore" in t for t in texts(notes))
        await pilot.press("escape")
        assert not isinstance(pilot.app.screen, ChatsScreen)


async def test_chats_command_opens_the_browser_with_a_search(tmp_path: Path) -> None:
    saved_chats(tmp_path)
    async with running(make_app(transcripts=tmp_path)) as (pilot, _):
        await command(pilot, "/chats zebra")
        screen = await browser(pilot)
        assert screen.query_one("#chats-search", Input).value == "zebra"
        await wait_for(pilot, lambda: screen.shown_query == "zebra")
        assert titles(screen) == ["What about zebras?"]
        assert screen.query_one("#chats-list", OptionList).highlighted == 0


async def test_read_attaches_a_file_to_the_next_message(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("buy milk\nand <think> tags\n")
    async with running(make_app(transcripts=tmp_path / "t")) as (pilot, notes):
        chat = await command(pilot, f"/read {tmp_path / 'notes.txt'}")
        assert any("Attached `notes.txt`" in n and "tokens" in n for n in
                   [w.source for w in chat.query("NoteMessage")])  # fmt: skip
        await command(pilot, f"/read {tmp_path / 'missing.txt'}")
        assert any("no such file" in t for t in texts(notes))
        await submit(pilot, "what do I need?")
        sent = chat.session.messages[0].content
        assert sent.startswith("File `notes.txt`:\n\n```txt\nbuy milk\nand <think> tags\n```")
        assert sent.endswith("what do I need?")
        saved = read_transcript(chat.session.transcript_path)
        assert saved.messages[0]["content"] == sent  # the transcript records the file
        await submit(pilot, "and next?")  # the file went with one message only
        assert chat.session.messages[2].content == "and next?"


async def test_read_tab_completes_paths(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    async with running(make_app()) as (pilot, _):
        chat = await chat_screen(pilot)
        chat.prompt.load_text("/read no")
        chat.prompt.focus()
        chat.prompt.move_cursor((0, 8))
        await pilot.press("tab")
        await pilot.pause()
        assert chat.prompt.text.rstrip() == "/read notes.txt"


async def test_preset_lists_and_applies(tmp_path: Path) -> None:
    async with running(make_app()) as (pilot, notes):
        chat = await chat_screen(pilot)
        preset = Preset("coder", {"system": "Review code.", "temperature": 0.2, "theme": "nord"})
        set_context(chat.session, ChatContext(presets={"coder": preset}))
        await command(pilot, "/preset")
        assert any("| coder |" in w.source for w in chat.query("NoteMessage"))
        await command(pilot, "/preset coder")
        assert chat.session.system_prompt == "Review code."
        assert chat.session.settings.sampling.temperature == 0.2
        assert pilot.app.theme_name == "nord"
        await command(pilot, "/preset nope")
        assert any("no preset 'nope'" in t for t in texts(notes))
