"""sentry-extract: Sentry organizations, projects, teams, members, releases, issues and
events into Parquet or PostgreSQL, incrementally."""

__version__ = "0.1.0"
