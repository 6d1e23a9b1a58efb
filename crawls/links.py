"""URL normalisation, the site boundary and the user's include/exclude patterns.

Patterns are user input run against every link, so they go through RE2 (linear time, no
backreferences), never Python's backtracking ``re``: ``(a+)+$`` cannot freeze anything.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit

import re2

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2000  # CrawledPage.url; longer links are not followed
MAX_PATTERN_LENGTH = 500
# RE2 is linear in the URL but its cost per character grows with the compiled program: "(?:.?.?.?.?){1000}z"
# is 36,005 instructions and ~110 ms per 2 KB URL (GIL held). Typical URL patterns are well under 100.
MAX_PATTERN_PROGRAM_SIZE = 1_000
MAX_PATTERNS_PROGRAM_SIZE = 5_000  # all include and exclude patterns of one crawl together

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the user's error, reported to them, not a log line


def normalize(url: str, base: str | None = None) -> str | None:
    """An absolute http(s) URL without fragment, default port or empty query; None if not crawlable.

    Never raises: whatever a page links to is either a URL to fetch or None.
    """
    try:
        url = url.strip()
        if base is not None:
            url = urljoin(base, url)
        url, _ = urldefrag(url)
        parts = urlsplit(url)
        port = parts.port
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            return None
        host = parts.hostname.lower()
        if ":" in host:
            host = f"[{host}]"  # IPv6 literal
        if port and port != DEFAULT_PORTS[scheme]:
            host = f"{host}:{port}"
        normal = urlunsplit((scheme, host, parts.path or "/", parts.query, ""))
    except ValueError:  # e.g. "http://[::1" or a port out of range
        return None
    return normal if len(normal) <= MAX_URL_LENGTH else None


def same_site(url: str, start: str) -> bool:
    """Same scheme-less host (and port) as the start URL; ``www.`` is the same site."""

    def host(u: str) -> str:
        netloc = urlsplit(u).netloc.lower()
        return netloc.removeprefix("www.")

    return host(url) == host(start)


def compile_pattern(pattern: str) -> re2._Regexp:
    """The pattern compiled by RE2; ``ValueError`` naming it when too long or not RE2 syntax."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"pattern longer than {MAX_PATTERN_LENGTH} characters: '{pattern[:40]}…'")
    try:
        compiled = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0].decode(errors="replace") if error.args and isinstance(error.args[0], bytes) else str(error)
        raise ValueError(f"not a supported regular expression: '{pattern}' ({reason})") from None
    if compiled.programsize > MAX_PATTERN_PROGRAM_SIZE:
        raise ValueError(
            f"pattern too complex: '{pattern[:40]}' (RE2 program size {compiled.programsize}, at most {MAX_PATTERN_PROGRAM_SIZE})"
        )
    return compiled


def pattern_errors(include: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict[str, list[str]]:
    """Why the patterns cannot be used, by field (``include_patterns``, ``exclude_patterns``); empty when all are fine.

    Each pattern must compile within its own size bound, and all of them together within
    ``MAX_PATTERNS_PROGRAM_SIZE``: the pattern that goes over the total is the one named.
    """
    errors: dict[str, list[str]] = {}
    total = 0
    for name, patterns in (("include_patterns", include), ("exclude_patterns", exclude)):
        for pattern in patterns:
            try:
                size = compile_pattern(pattern).programsize
            except ValueError as error:
                errors.setdefault(name, []).append(str(error))
                continue
            total += size
            if total > MAX_PATTERNS_PROGRAM_SIZE:
                errors.setdefault(name, []).append(
                    f"patterns too complex together: '{pattern[:40]}' takes the total RE2 program size to {total} "
                    f"(at most {MAX_PATTERNS_PROGRAM_SIZE} for all patterns of a crawl)"
                )
    return errors


@dataclass(frozen=True)
class Patterns:
    """Include patterns (if any) must match a URL; exclude patterns must not. Compiled once per crawl."""

    include: tuple[re2._Regexp, ...] = ()
    exclude: tuple[re2._Regexp, ...] = ()

    @classmethod
    def compile(cls, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> "Patterns":
        """``ValueError`` (the first reason) for a pattern ``pattern_errors`` refuses."""
        include, exclude = list(include), list(exclude)
        if errors := pattern_errors(include, exclude):
            raise ValueError(next(iter(errors.values()))[0])
        return cls(tuple(map(compile_pattern, include)), tuple(map(compile_pattern, exclude)))

    def allow(self, url: str) -> bool:
        if self.include and not any(p.search(url) for p in self.include):
            return False
        return not any(p.search(url) for p in self.exclude)
