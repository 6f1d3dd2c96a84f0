"""The web server: a page and a JSON API over `api.TextModel` (needs the `web` extra)."""
