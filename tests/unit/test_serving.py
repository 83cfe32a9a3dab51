"""The guarded uvicorn protocol costs no more memory per connection than uvicorn's own."""

from __future__ import annotations

import sys
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy import serving


async def _app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError("no request is made")


async def test_a_guarded_connection_does_not_grow_uvicorns_instance_dict() -> None:
    config = Config(app=_app)
    config.load()
    limits = serving.ConnectionLimits(1.0, 1.0, 10, lambda: b"")
    protocol: Any = serving.guarded_protocol(limits)
    guarded = protocol(config=config, server_state=ServerState(), app_state={})
    plain = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    # Three more attributes in the dict made it resize (about 1.3 KB more per connection).
    assert sys.getsizeof(vars(guarded)) <= sys.getsizeof(vars(plain))
    assert guarded._in_body is False and guarded._timer is None
