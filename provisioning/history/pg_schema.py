"""Private PostgreSQL schemas for the benches: made for one run, dropped after it.

A bench fills a schema of its own on the server it is given, so it never touches the tables of
a real history in the same database; the store reaches it through the URL's ``search_path``.
"""

from __future__ import annotations

import os
import secrets
import urllib.parse


def schema_url(server_url: str, schema: str, **params: str) -> str:
    """``server_url`` with ``search_path`` set to ``schema`` (and any other libpq ``params``)."""
    parts = urllib.parse.urlsplit(server_url)
    query = urllib.parse.parse_qsl(parts.query) + [("options", f"-csearch_path={schema}"), *params.items()]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def create_schema(server_url: str, prefix: str) -> str:
    """Create a new schema named ``<prefix>_<pid>_<random>`` and return its name.

    Raises:
        psycopg.Error: the server is unreachable or refuses.
    """
    import psycopg

    schema = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema


def drop_schema(server_url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it (no error if it is gone already)."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
