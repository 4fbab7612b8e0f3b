"""What each route needs: the scope table (checked by `app.guard` before a body is read)
and the collection check the routes make once they know the collection (`Access`)."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Annotated, Any

from fastapi import Depends, Request

from app.keys import Principal
from embedding.errors import QuarryError

# (methods, path) -> the scope it needs; the first match decides. A route not listed needs
# admin: a new route is closed to lesser keys until it is given a scope here.
_RULES: tuple[tuple[frozenset[str], re.Pattern[str], str], ...] = tuple(
    (frozenset(methods.split()), re.compile(path), scope)
    for methods, path, scope in (
        ("GET HEAD", r"/v1/(documents|jobs)(/.*)?", "read"),
        ("POST", r"/v1/(search|embeddings|rerank)", "read"),
        ("GET HEAD", r"/v1/(instructions|models|collections|stats)", "read"),
        ("GET HEAD", r"/(docs|docs/oauth2-redirect|redoc|openapi\.json)", "read"),
        ("GET HEAD POST PUT DELETE", r"/v1/(documents|jobs|sources)(/.*)?", "write"),
    )
)
# Admin routes over the whole data dir: no key limited to collections may use them.
_WHOLE = re.compile(r"/v1/(backup|keys|audit)(/.*)?")


def needed_scope(method: str, path: str) -> str:
    for methods, pattern, scope in _RULES:
        if method in methods and pattern.fullmatch(path):
            return scope
    return "admin"


def scope_problem(who: Principal, method: str, path: str) -> str | None:
    """Why this key may not make this request (None: it may, collections aside)."""
    needed = needed_scope(method, path)
    if not who.may(needed):
        return (
            f"key {who.id} ({who.name}) has scope {who.scope!r}; {method} {path} needs {needed!r}"
        )
    if who.collections and _WHOLE.fullmatch(path):
        return (
            f"key {who.id} ({who.name}) is limited to collections {', '.join(who.collections)}; "
            f"{path} covers every collection"
        )
    return None


class ForbiddenError(QuarryError):
    code = "forbidden"
    status = 403


_PRINCIPAL = "quarry_principal"


def set_principal(scope: MutableMapping[str, Any], who: Principal) -> None:
    scope.setdefault("state", {})[_PRINCIPAL] = who


class AccessCheck:
    """The requesting key, for the routes' collection checks."""

    def __init__(self, who: Principal) -> None:
        self.who = who

    def collection(self, name: str) -> str:
        """`name`, if this key may use it; 403 naming the key and the collection if not."""
        if not self.who.sees(name):
            raise ForbiddenError(
                f"key {self.who.id} ({self.who.name}) may not use collection {name!r} "
                f"(it is limited to {', '.join(self.who.collections)})",
                detail={"collection": name},
            )
        return name

    def sees(self, name: str) -> bool:
        return self.who.sees(name)


def get_access(request: Request) -> AccessCheck:
    who = getattr(request.state, _PRINCIPAL, None)
    if not isinstance(who, Principal):  # closed, not open, if the guard were ever bypassed
        raise RuntimeError("no requesting key: app.guard.Guard must run before the routes")
    return AccessCheck(who)


Access = Annotated[AccessCheck, Depends(get_access)]
