"""The command palette (Ctrl+P, Textual's own): every slash command and every key's action.

A command that takes no argument runs at once; one that takes an argument is put into the
prompt, ready for it (``/theme`` also offers one entry per theme). The keys' actions come from
the chat screen's bindings, so a new binding with a description shows up here by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

from smolchat.chat.commands import available_commands
from smolchat.tui.screens.dialogs import key_name
from smolchat.tui.themes import available_themes


@dataclass(frozen=True)
class Entry:
    """One line of the palette: its text, help, and what choosing it does."""

    text: str
    help: str
    run: Callable[[], object]


class SmolchatCommands(Provider):
    """Slash commands and key actions of the chat screen."""

    def entries(self) -> list[Entry]:
        from smolchat.tui.screens.chat import ChatScreen

        screen = self.screen if isinstance(self.screen, ChatScreen) else None
        if screen is None:
            stack = [s for s in self.app.screen_stack if isinstance(s, ChatScreen)]
            screen = stack[-1] if stack else None
        if screen is None:
            return []
        found: list[Entry] = []
        thinking = screen.session.backend.has_thinking_mode
        for cmd in available_commands(thinking_mode=thinking):
            takes_args = cmd.usage.strip() != f"/{cmd.name}"
            if takes_args:
                run = partial(screen.prefill, f"/{cmd.name} ")
            else:
                run = partial(screen.run_slash_soon, f"/{cmd.name}")
            found.append(Entry(cmd.usage, cmd.help, run))
            if cmd.name == "theme":
                for theme in available_themes():
                    found.append(
                        Entry(f"/theme {theme}", "switch the colour theme",
                              partial(screen.run_slash_soon, f"/theme {theme}"))
                    )  # fmt: skip
        for binding in [*screen.BINDINGS, *self.app.BINDINGS]:
            if not isinstance(binding, Binding) or not binding.description:
                continue
            keys = binding.key_display or ", ".join(key_name(k) for k in binding.key.split(","))
            action = binding.action
            target = self.app if binding in self.app.BINDINGS else screen
            found.append(
                Entry(
                    f"{binding.description} ({keys})",
                    binding.tooltip or binding.description,
                    partial(target.run_action, action),
                )
            )
        return found

    async def discover(self) -> Hits:
        for entry in self.entries():
            yield DiscoveryHit(entry.text, entry.run, help=entry.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for entry in self.entries():
            score = max(matcher.match(entry.text), matcher.match(entry.help) * 0.5)
            if score > 0:
                yield Hit(score, matcher.highlight(entry.text), entry.run, help=entry.help)
