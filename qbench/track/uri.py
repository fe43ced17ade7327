"""MLflow tracking URIs: the local SQLite store (``sqlite:///PATH``, relative to the current directory) and
servers. The one place that parses them (tracking, sync, ``compare``, ``check``, ``ui``, baselines)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SQLITE = "sqlite:///"
DEFAULT_URI = "sqlite:///results/mlflow.db"


class NoStore(LookupError):
    """A local store that does not exist (looking into it would create an empty database)."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI as an absolute path (a relative one against the current
    directory); None for any other URI."""
    if not uri.startswith(SQLITE):
        return None
    path = Path(uri[len(SQLITE):]).expanduser()
    return path if path.is_absolute() else path.resolve()


def resolve_uri(uri: str) -> str:
    """``uri`` with a relative SQLite path made absolute (and the database's folder created)."""
    path = sqlite_path(uri)
    if path is None:
        return uri
    path.parent.mkdir(parents=True, exist_ok=True)
    return SQLITE + str(path)


def is_local(uri: str) -> bool:
    """A store on this machine (SQLite or a folder), whose artifacts qbench keeps under its results dir."""
    return uri.startswith(("sqlite:", "file:"))


def require_store(uri: str) -> Path | None:
    """The database file of an existing local store (None for a server); :class:`NoStore` when it is missing."""
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise NoStore(f"no MLflow store at {path} (run a suite first: qbench run +suite=NAME, or point "
                      "--tracking-uri at the store)")
    return path


def public_uri(uri: str) -> str:
    """``uri`` without credentials (for files committed to a repository, such as baselines)."""
    parts = urlsplit(uri)
    if not (parts.username or parts.password):
        return uri  # (urlunsplit would also turn sqlite:///relative into sqlite:/relative)
    return urlunsplit(parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")))
