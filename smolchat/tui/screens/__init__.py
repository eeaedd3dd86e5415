"""smolchat's screens: loading, chat, help and the confirm dialog."""
