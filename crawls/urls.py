"""URL normalisation and the site boundary, so each page is fetched once."""

import re
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize(url: str, base: str | None = None) -> str | None:
    """An absolute http(s) URL without fragment, default port or empty query; None if not crawlable."""
    url = url.strip()
    if base is not None:
        url = urljoin(base, url)
    url, _ = urldefrag(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if port and port != DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", parts.query, ""))


def same_site(url: str, start: str) -> bool:
    """Same scheme-less host (and port) as the start URL; ``www.`` is the same site."""

    def host(u: str) -> str:
        netloc = urlsplit(u).netloc.lower()
        return netloc.removeprefix("www.")

    return host(url) == host(start)


def allowed_by_patterns(url: str, include: list[str], exclude: list[str]) -> bool:
    """Include patterns (if any) must match; exclude patterns must not (regular expressions)."""
    if include and not any(re.search(p, url) for p in include):
        return False
    return not any(re.search(p, url) for p in exclude)
