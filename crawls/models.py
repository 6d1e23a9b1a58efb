"""Crawl jobs and their pages (filled in by the crawl issue)."""
