"""One module per decoder family; each registers itself with :mod:`smolchat.model.registry`."""
