"""One module per upload or feed protocol, each producing the same ReadingIn batches."""
