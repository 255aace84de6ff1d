"""One view implementation per store: rows and the projection's position, saved together."""
