"""The local planning page (`fitplan serve`): a JSON API answering what the command line prints
(`web.api`), the server (`web.server`) and the page itself (`web/static/`)."""
