"""The Textual TUI. Import :mod:`smolchat.tui.app` for the app itself (it imports textual)."""
