"""The aiohttp application: JSON API, pages, health."""
