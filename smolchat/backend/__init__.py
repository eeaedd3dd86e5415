"""The seam between conversations and whatever generates text (see ``types``).

``types``: the Backend protocol, requests, events, streams (torch-free). ``local``: the
in-process engine. A remote backend (an OpenAI-compatible server) is one more module here.
"""
