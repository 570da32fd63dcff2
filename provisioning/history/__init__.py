"""Scan history: keep every scan event the gates publish, and show it to the venue manager.

Flow: ``collector`` subscribes to ``<prefix>/+/scan`` and stores each event once in a
``HistoryStore`` (``store``: SQLite by default, PostgreSQL by URL); ``query`` turns the
manager's filters into one SQL ``WHERE`` shared by both databases; ``export`` writes the rows
as a table, CSV, JSON or XLSX; ``web`` serves one read-only page with the same filters.

The pure parts (``events``, ``query``'s filter building, ``export``'s row formatting) read
no clock and do no I/O: times are passed in.
"""
