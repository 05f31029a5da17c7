"""One module per ``sbi-ops`` sub-command; each exposes ``register(app)``."""
