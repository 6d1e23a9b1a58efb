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
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0].decode(errors="replace") if error.args and isinstance(error.args[0], bytes) else str(error)
        raise ValueError(f"not a supported regular expression: '{pattern}' ({reason})") from None


@dataclass(frozen=True)
class Patterns:
    """Include patterns (if any) must match a URL; exclude patterns must not. Compiled once per crawl."""

    include: tuple[re2._Regexp, ...] = ()
    exclude: tuple[re2._Regexp, ...] = ()

    @classmethod
    def compile(cls, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> "Patterns":
        return cls(tuple(map(compile_pattern, include)), tuple(map(compile_pattern, exclude)))

    def allow(self, url: str) -> bool:
        if self.include and not any(p.search(url) for p in self.include):
            return False
        return not any(p.search(url) for p in self.exclude)


def allowed_by_patterns(url: str, include: list[str], exclude: list[str]) -> bool:
    """Include patterns (if any) must match; exclude patterns must not (RE2 syntax). Compiles each call: prefer ``Patterns``."""
    return Patterns.compile(include, exclude).allow(url)
