"""Reading a request body within a deadline.

aiohttp bounds a body's size (``client_max_size``) but not its pace: a client sending
one byte a second keeps ``request.read()`` waiting as long as it likes. Handlers read
through :func:`read_bytes`, which gives up after ``deadline_s`` seconds with a 408 in our
error shape. Read the body before taking any pooled resource (a database connection
above all), so a slow client holds only its own socket.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from billfold.http.errors import request_timeout


async def read_bytes(request: web.Request, deadline_s: float) -> bytes:
    """The whole body, or ``ApiError`` 408 if it is not all there within ``deadline_s``.
    (aiohttp's own errors, such as 413 past ``client_max_size``, pass through.)"""
    try:
        async with asyncio.timeout(deadline_s):
            return await request.read()
    except TimeoutError:
        raise request_timeout(deadline_s) from None
