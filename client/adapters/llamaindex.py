"""bertdot search as a LlamaIndex retriever (``pip install 'bertdot[llamaindex]'``).

Usage::

    from bertdot.client.adapters.llamaindex import BertdotRetriever

    retriever = BertdotRetriever("localhost:50051", k=5)
    nodes = retriever.retrieve("what is dense retrieval?")  # list[NodeWithScore], best first
    for n in nodes:
        print(n.node.node_id, n.score, n.node.metadata["title"], n.node.get_content()[:80])
    nodes = await retriever.aretrieve("what is dense retrieval?")

    # or inside a query engine:
    from llama_index.core.query_engine import RetrieverQueryEngine
    engine = RetrieverQueryEngine.from_args(retriever, llm=...)

Pass ``client=Client(...)`` instead of a target to reuse a configured client
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
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as err:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("install the llamaindex extra: pip install 'bertdot[llamaindex]'") from err

__all__ = ["BertdotRetriever"]


def to_nodes(result: SearchResult) -> list[NodeWithScore]:
    """One scored ``TextNode`` per hit, in the server's (best-first) order.

    The passage id becomes the node id, so LlamaIndex postprocessors that dedup
    or look nodes up by id see the corpus's own ids.
    """
    return [
        NodeWithScore(
            node=TextNode(id_=hit.id, text=hit.text, metadata={"title": hit.title}),
            score=hit.score,
        )
        for hit in result.hits
    ]


class BertdotRetriever(BaseRetriever):
    """A LlamaIndex retriever backed by a bertdot server's ``Search``.

    Give ``target`` (a new channel is opened, with ``token`` if set) or an
    existing ``client``. ``k`` and ``ef`` apply to every search; ``timeout``
    (seconds) overrides the client's default deadline. Text is always
    requested: a node without its text is of no use to a query engine.

    The async path is native gRPC asyncio, not the sync call in a thread. An
    asyncio channel belongs to one event loop, so unless ``async_client`` is
    given, each async call opens a channel with the sync client's settings and
    closes it after: simple and loop-safe, at the price of one connection
    setup per call. Give ``async_client`` (created in the loop that will use it)
    to reuse one connection.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        client: Client | None = None,
        async_client: AsyncClient | None = None,
        k: int = DEFAULT_K,
        ef: int | None = None,
        token: str | None = None,
        timeout: float | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        if ef is not None and ef < 1:
            raise ValueError("ef must be at least 1")
        self._client = open_client(target, client, token)
        self._owns_client = client is None
        self.async_client = async_client
        self.k = k
        self.ef = ef
        self.timeout = timeout
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def close(self) -> None:
        """Close the channel this retriever opened; a client passed in stays the caller's."""
        if self._owns_client:
            self._client.close()

    def _options(self) -> dict[str, Any]:
        return {"k": self.k, "ef": self.ef, "return_text": True, "timeout": self.timeout}

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return to_nodes(self._client.search(query_bundle.query_str, **self._options()))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = query_bundle.query_str
        if self.async_client is not None:
            return to_nodes(await self.async_client.search(query, **self._options()))
        async with async_twin(self._client) as client:
            return to_nodes(await client.search(query, **self._options()))
