"""Conversations: tokenizer and streaming detokenizer, chat template, thinking modes, reasoning
parser, session, transcripts and slash commands. UI-agnostic; importing it stays light."""
