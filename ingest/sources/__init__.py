"""One module per way readings arrive, each a `Source` (base.py) giving the pipeline ReadingIn."""
