"""crm: customer accounts, interactions and sales leads in SQLite (confidential data).

The database lives in the mesh's data directory (`MESH_HOME`), or at `CRM_DB`; a few
accounts are seeded on first use. Run it with `mesh run agents/crm.py`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio.to_thread
from pydantic import BaseModel

from mesh import Agent
from mesh.config import mesh_paths

agent = Agent(
    "crm",
    description="Customer accounts, interaction history and sales leads",
    owner="sales-ops",
    jurisdiction="eu",
    data_class="confidential",
)


class Account(BaseModel):
    """A customer account."""

    email: str
    name: str
    company: str
    country: str
    plan: str
    tier: str
    customer_since: str


class Interaction(BaseModel):
    """One note on an account's history."""

    id: int
    email: str
    note: str
    channel: str
    at: float


class Lead(BaseModel):
    """A prospect in the sales pipeline."""

    email: str
    company: str
    name: str
    country: str
    score: int | None
    stage: str
    updated_at: float


@agent.tool(read_only=True, idempotent=True)
async def lookup(email: str) -> Account | None:
    """The account registered under `email`, or null when there is none."""
    rows = await _query("SELECT * FROM accounts WHERE email = ?", (email.strip().lower(),))
    return Account(**rows[0]) if rows else None


@agent.tool()
async def log_interaction(email: str, note: str, channel: str = "support") -> Interaction:
    """Append `note` to the history of `email` and return the stored interaction."""
    at = time.time()
    sql = "INSERT INTO interactions (email, note, channel, at) VALUES (?, ?, ?, ?) RETURNING *"
    rows = await _query(sql, (email.strip().lower(), note, channel, at))
    return Interaction(**rows[0])


@agent.tool(read_only=True, idempotent=True)
async def interactions(email: str, limit: int = 10) -> list[Interaction]:
    """The latest `limit` interactions of `email`, newest first."""
    sql = "SELECT * FROM interactions WHERE email = ? ORDER BY id DESC LIMIT ?"
    return [Interaction(**r) for r in await _query(sql, (email.strip().lower(), max(limit, 0)))]


@agent.tool(idempotent=True)
async def upsert_lead(
    email: str, company: str, name: str = "", country: str = "", score: int | None = None, stage: str = "new"
) -> Lead:
    """Create or update the lead for `email`; the stored lead is returned."""
    sql = (
        "INSERT INTO leads (email, company, name, country, score, stage, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (email) DO UPDATE SET company = excluded.company, name = excluded.name, "
        "country = excluded.country, score = excluded.score, stage = excluded.stage, "
        "updated_at = excluded.updated_at RETURNING *"
    )
    rows = await _query(sql, (email.strip().lower(), company, name, country.upper(), score, stage, time.time()))
    return Lead(**rows[0])


_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (email TEXT PRIMARY KEY, name TEXT, company TEXT, country TEXT,
    plan TEXT, tier TEXT, customer_since TEXT);
CREATE TABLE IF NOT EXISTS interactions (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL,
    note TEXT NOT NULL, channel TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS leads (email TEXT PRIMARY KEY, company TEXT, name TEXT, country TEXT,
    score INTEGER, stage TEXT, updated_at REAL);
"""
_SEED = [
    ("ada@example.com", "Ada Lovelace", "Analytical Engines GmbH", "DE", "business", "enterprise", "2019-03-01"),
    ("marie@example.fr", "Marie Curie", "Radium SARL", "FR", "team", "standard", "2021-06-15"),
    ("linus@example.fi", "Linus Torvalds", "Kernel Oy", "FI", "free", "free", "2023-01-09"),
    ("grace@example.com", "Grace Hopper", "Compiler Corp", "US", "business", "enterprise", "2020-11-30"),
]
_initialised: set[Path] = set()


def database() -> Path:
    """Where the CRM keeps its data: `CRM_DB`, else `crm.sqlite3` in the mesh's data directory."""
    explicit = os.environ.get("CRM_DB")
    return Path(explicit) if explicit else mesh_paths().ensure().data_dir / "crm.sqlite3"


async def _query(sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    return await anyio.to_thread.run_sync(_run, database(), sql, params)


def _run(path: Path, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(path, timeout=5.0)) as db:
        db.row_factory = sqlite3.Row
        if path not in _initialised:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            with db:
                db.executemany("INSERT OR IGNORE INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?)", _SEED)
            _initialised.add(path)
        with db:
            return [dict(row) for row in db.execute(sql, params).fetchall()]
