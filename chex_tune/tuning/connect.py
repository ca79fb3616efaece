"""Is the MLflow tracking server or Ray cluster the user named reachable? Asked once, in seconds.

Without this, a wrong ``--tracking-uri`` costs minutes of MLflow's HTTP retries (7 by default, with
back-off) and a wrong ``--ray-address`` a long wait in ``ray.init``, before an error that does not say
which flag was wrong. Only the standard library: these checks run before MLflow or Ray is imported.
"""

from __future__ import annotations

import pathlib
import socket
import urllib.error
import urllib.parse
import urllib.request

from chex_tune.core.errors import UserError

TIMEOUT_S = 5.0


def check_tracking_uri(uri: str, *, flag: str = "--tracking-uri", must_exist: bool = False,
                       timeout: float = TIMEOUT_S) -> None:
    """Raise ``UserError`` when ``uri`` cannot serve as a tracking store.

    ``http(s)://``: the server must answer (any HTTP status counts: a proxy may guard ``/health``).
    ``sqlite:///PATH``: with ``must_exist`` (commands that only read), the database file must exist.
    A bare path or ``file:`` URI is MLflow's old file store, which MLflow 3 rejects.
    """
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        if not parsed.hostname:
            raise UserError(f"{flag} {uri!r} names no host; expected e.g. http://127.0.0.1:5000")
        try:
            parsed.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise UserError(f"{flag} {uri!r}: the port is not a number; expected e.g. http://127.0.0.1:5000") from None
        health = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=timeout):  # noqa: S310 (http(s) only, checked above)
                pass
        except urllib.error.HTTPError:
            return  # something answers; MLflow reports its own errors from here on
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                reason = "timed out"
            reason = getattr(reason, "strerror", None) or str(reason)
            raise UserError(f"{flag} {uri}: no MLflow tracking server answers there ({reason}); start one "
                            f"(mlflow server --host 127.0.0.1 --port PORT) or fix the address") from None
    elif scheme == "sqlite":
        path = uri.split("sqlite:///", 1)[1] if uri.startswith("sqlite:///") else ""
        if must_exist and path and path != ":memory:" and not pathlib.Path(path).exists():
            raise UserError(f"{flag} {uri}: no MLflow database at {path}; run a sweep first or fix the path")
    elif scheme in ("", "file") or (len(scheme) == 1 and scheme.isalpha()):  # a path (or a Windows drive)
        raise UserError(f"{flag} {uri!r} is a folder, MLflow's old file store, which MLflow 3 no longer reads; "
                        f"use sqlite:///PATH/mlflow.db, an http(s):// server, or --store DIR")


def check_ray_address(address: str, *, flag: str = "--ray-address", timeout: float = TIMEOUT_S) -> None:
    """Raise ``UserError`` when nothing listens at a Ray cluster address (``HOST:PORT`` or ``ray://HOST:PORT``).

    ``auto`` and ``local`` are Ray's own words and are left to Ray.
    """
    if address in ("auto", "local"):
        return
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in text:
        raise UserError(f"{flag} {address!r}: expected HOST:PORT (the head node's GCS port, 6379 by default), "
                        f"ray://HOST:PORT (Ray Client, 10001 by default), auto or local")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, (TimeoutError, socket.timeout)) else (exc.strerror or str(exc))
        raise UserError(f"{flag} {address}: no Ray cluster answers there ({reason}); start its head node "
                        f"(ray start --head --port {port}) or fix the address") from None
