"""bertdot search as a LangChain retriever (``pip install 'bertdot[langchain]'``).

Usage::

    from bertdot.client.adapters.langchain import BertdotRetriever

    retriever = BertdotRetriever(target="localhost:50051", k=5)
    docs = retriever.invoke("what is dense retrieval?")  # list[Document], best first
    for doc in docs:
        print(doc.id, doc.metadata["score"], doc.metadata["title"], doc.page_content[:80])
    docs = await retriever.ainvoke("what is dense retrieval?", k=20)  # per-call k (or ef)

Pass ``client=Client(...)`` instead of ``target`` to reuse a configured client
(TLS, token, retries); ``async_client=`` likewise for the async path, when all
calls come from one event loop. gRPC failures raise bertdot's typed errors
(``bertdot.client.InvalidArgument``, ``Unavailable``, ...).
"""

from __future__ import annotations

from typing import Any

from bertdot.client.adapters import async_twin, open_client
from bertdot.client.aio import AsyncClient
from bertdot.client.sync import DEFAULT_K, Client
from bertdot.client.types import SearchResult

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from pydantic import Field, PrivateAttr
except ImportError as err:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("install the langchain extra: pip install 'bertdot[langchain]'") from err

__all__ = ["BertdotRetriever"]


def to_documents(result: SearchResult) -> list[Document]:
    """One ``Document`` per hit, in the server's (best-first) order.

    The passage id goes both to ``Document.id`` (what LangChain dedups and
    indexes by) and to ``metadata["id"]`` (what survives serializers and
    prompt templates that only see metadata).
    """
    return [
        Document(
            page_content=hit.text,
            metadata={"id": hit.id, "score": hit.score, "title": hit.title},
            id=hit.id,
        )
        for hit in result.hits
    ]


class BertdotRetriever(BaseRetriever):
    """A LangChain retriever backed by a bertdot server's ``Search``.

    Give ``target`` (a new channel is opened, with ``token`` if set) or an
    existing ``client``. ``k`` and ``ef`` are the defaults of every search and
    can be overridden per call (``invoke(query, k=3)``); ``timeout`` (seconds)
    overrides the client's default deadline. Text is always requested: a
    document without its text is of no use to a chain.

    The async path is native gRPC asyncio, not the sync call in a thread. An
    asyncio channel belongs to one event loop, so unless ``async_client`` is
    given, each async call opens a channel with the sync client's settings and
    closes it after: simple and loop-safe, at the price of one connection
    setup per call. Give ``async_client`` (created in the loop that will use it)
    to reuse one connection.
    """

    target: str | None = None
    client: Client | None = Field(default=None, exclude=True)
    async_client: AsyncClient | None = Field(default=None, exclude=True)
    k: int = Field(default=DEFAULT_K, ge=1)
    ef: int | None = Field(default=None, ge=1)
    token: str | None = Field(default=None, exclude=True, repr=False)
    timeout: float | None = Field(default=None, gt=0)

    _client: Client = PrivateAttr()
    _owns_client: bool = PrivateAttr(default=False)

    def model_post_init(self, context: Any, /) -> None:
        """Open (or adopt) the sync client once, so every call reuses its channel."""
        super().model_post_init(context)
        self._client = open_client(self.target, self.client, self.token)
        self._owns_client = self.client is None

    def close(self) -> None:
        """Close the channel this retriever opened; a client passed in stays the caller's."""
        if self._owns_client:
            self._client.close()

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        ef: int | None = None,
    ) -> list[Document]:
        result = self._client.search(
            query,
            k=self.k if k is None else k,
            ef=self.ef if ef is None else ef,
            return_text=True,
            timeout=self.timeout,
        )
        return to_documents(result)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        ef: int | None = None,
    ) -> list[Document]:
        options: dict[str, Any] = {
            "k": self.k if k is None else k,
            "ef": self.ef if ef is None else ef,
            "return_text": True,
            "timeout": self.timeout,
        }
        if self.async_client is not None:
            return to_documents(await self.async_client.search(query, **options))
        async with async_twin(self._client) as client:
            return to_documents(await client.search(query, **options))
