"""`plmkit serve`: an HTTP server for a saved model, with dynamic batching, limits and a page to try it."""
