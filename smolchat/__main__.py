"""``python -m smolchat``: the same as the ``smolchat`` command."""

from smolchat.cli import main

main()
