"""smolchat's widgets: conversation entries, the prompt and the status bar."""
