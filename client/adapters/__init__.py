"""Retrieval-framework adapters: bertdot search as a LangChain or LlamaIndex retriever.

Each framework is an optional extra, so each adapter lives in its own module and
this package imports neither: ``import bertdot.client.adapters`` stays as light
as ``bertdot.client``. Pick the module of the framework you use:

- ``bertdot.client.adapters.langchain.BertdotRetriever`` (``pip install 'bertdot[langchain]'``)
- ``bertdot.client.adapters.llamaindex.BertdotRetriever`` (``pip install 'bertdot[llamaindex]'``)

What both share lives here: choosing or opening the sync ``Client``, and opening an
``AsyncClient`` with the same channel settings for the async path.
"""

from __future__ import annotations

import dataclasses

from bertdot.client.aio import AsyncClient
from bertdot.client.sync import Client

__all__: list[str] = []


def open_client(target: str | None, client: Client | None, token: str | None) -> Client:
    """The sync client an adapter searches with: the caller's, or a new one to ``target``.

    Exactly one of ``target`` and ``client`` is allowed, so a retriever never
    silently ignores half of its configuration; for the same reason ``token``
    (a channel setting) is refused next to an existing client.
    """
    if (target is None) == (client is None):
        raise ValueError("give either target or client (an existing bertdot Client), not both")
    if client is not None:
        if token is not None:
            raise ValueError("token configures a new channel: set it on the Client you pass")
        return client
    assert target is not None
    return Client(target, token=token)


def async_twin(client: Client) -> AsyncClient:
    """A new ``AsyncClient`` with ``client``'s channel settings (TLS, token, retries, ...).

    An asyncio channel belongs to the event loop it was created in, so an adapter
    cannot keep one across calls that may come from different loops; it opens one
    per call with this and closes it after. The caller owns the result.
    """
    config = client.config
    channel = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    target = channel.pop("target")
    return AsyncClient(target, timeout=client.timeout, **channel)
