"""``smolchat serve``: a LocalBackend behind an OpenAI-compatible HTTP API (FastAPI + uvicorn,
the ``smolchat[serve]`` extra). Imports the backend layer only, never the TUI."""
