"""A path-rewriting HTTP proxy: the Confluent Schema Registry API at the root of a port.

Apicurio Registry serves the Confluent-compatible API under ``/apis/ccompat/v7``.
Confluent clients and tools expect it at the root (``GET /subjects``), as the
Confluent Schema Registry of the Docker stack serves it. This proxy makes the
local registry's URL the same shape: ``http://127.0.0.1:8081``.

Run: ``python -m services.stack.proxy --port 8081 --upstream http://127.0.0.1:8085``.
"""

from __future__ import annotations

import argparse
import base64
import hmac
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, web

CCOMPAT_PREFIX = "/apis/ccompat/v7"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


def make_app(upstream: str, user_info: str | None = None) -> web.Application:
    """The proxy as an aiohttp application forwarding every request to ``upstream`` + ccompat prefix;
    with ``user_info`` (``user:password``), only requests with that HTTP basic auth (else 401)."""
    app = web.Application()
    expected = None if user_info is None else "Basic " + base64.b64encode(user_info.encode()).decode()
    session_key = web.AppKey("session", ClientSession)

    async def open_session(app: web.Application) -> None:
        app[session_key] = ClientSession(timeout=ClientTimeout(total=30), auto_decompress=True)

    async def close_session(app: web.Application) -> None:
        await app[session_key].close()

    async def forward(request: web.Request) -> web.Response:
        if expected is not None and not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            return web.json_response(
                {"error_code": 40101, "message": "Unauthorized: basic authentication required"},
                status=401, headers={"WWW-Authenticate": 'Basic realm="fraudstream"'},
            )
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in _HOP_BY_HOP and k.lower() != "authorization"}
        url = f"{upstream}{CCOMPAT_PREFIX}{request.rel_url.path_qs}"
        async with app[session_key].request(
            request.method, url, data=await request.read(), headers=headers, allow_redirects=False
        ) as resp:
            body = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=resp.status, body=body, headers=out)

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="Apicurio base URL, e.g. http://127.0.0.1:8085")
    parser.add_argument("--basic-auth-file", type=Path, help="File holding user:password; requests need it")
    args = parser.parse_args(argv)
    user_info = args.basic_auth_file.read_text(encoding="utf-8").strip() if args.basic_auth_file else None
    web.run_app(make_app(args.upstream.rstrip("/"), user_info), host=args.host, port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
