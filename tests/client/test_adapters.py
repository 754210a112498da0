"""The LangChain and LlamaIndex retrievers, with the real frameworks, against the fake server.

The fake answers ``k`` hits ``p0, p1, ...`` scored ``len(query) - i`` (best first),
with text ``"text i"`` only when asked for it, and fails ``""`` with INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from bertdot.client import AsyncClient, Client, InvalidArgument, SearchResult
from bertdot.client.adapters import langchain as lc
from bertdot.client.adapters import llamaindex as li
from tests.support import fake_server
from tests.support.fake_server import FakeRetrieval


@pytest.fixture
def served() -> Iterator[tuple[str, FakeRetrieval]]:
    server, port, servicer = fake_server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


class RecordingClient(Client):
    """A real client that remembers the options of each search."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[dict[str, Any]] = []

    def search(self, query: str, **options: Any) -> SearchResult:
        self.seen.append(options)
        return super().search(query, **options)


class SyncForbidden(Client):
    """Proves the async path never falls back to the blocking client."""

    def search(self, query: str, **options: Any) -> SearchResult:
        raise AssertionError("the async path called the sync client")


class RecordingAsyncClient(AsyncClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[dict[str, Any]] = []

    async def search(self, query: str, **options: Any) -> SearchResult:
        self.seen.append(options)
        return await super().search(query, **options)


def expected(query: str, k: int) -> list[tuple[str, float, str, str]]:
    return [(f"p{i}", float(len(query) - i), f"title {i}", f"text {i}") for i in range(k)]


# ------------------------------------------------------------- LangChain ----


def lc_rows(docs: list[Any]) -> list[tuple[str, float, str, str]]:
    for doc in docs:
        assert isinstance(doc, lc.Document)
        assert doc.id == doc.metadata["id"]
    return [(d.id, d.metadata["score"], d.metadata["title"], d.page_content) for d in docs]


def test_langchain_sync_documents_in_order(served: tuple[str, FakeRetrieval]) -> None:
    target, servicer = served
    retriever = lc.BertdotRetriever(target=target, k=3, token="s3cret", timeout=5)
    try:
        assert lc_rows(retriever.invoke("hello")) == expected("hello", 3)
        assert lc_rows(retriever.invoke("hello", k=5)) == expected("hello", 5)  # per-call k
    finally:
        retriever.close()
    assert servicer.metadata["Search"]["authorization"] == "Bearer s3cret"


def test_langchain_passes_k_ef_timeout_and_always_asks_for_text(
    served: tuple[str, FakeRetrieval],
) -> None:
    with RecordingClient(served[0], timeout=5) as client:
        retriever = lc.BertdotRetriever(client=client, k=2, ef=40, timeout=3)
        retriever.invoke("query")
        retriever.invoke("query", ef=80)
        retriever.close()  # a client passed in is not closed by the retriever
        assert client.search("still open").hits
    assert client.seen[0] == {"k": 2, "ef": 40, "return_text": True, "timeout": 3}
    assert client.seen[1]["ef"] == 80


def test_langchain_async_is_native(served: tuple[str, FakeRetrieval]) -> None:
    target, servicer = served
    with SyncForbidden(target, timeout=5, token="s3cret") as client:
        retriever = lc.BertdotRetriever(client=client, k=4)
        docs = asyncio.run(retriever.ainvoke("hello there"))
        both = asyncio.run(retriever.abatch(["a", "bb"], k=1))
    assert lc_rows(docs) == expected("hello there", 4)
    assert [lc_rows(d) for d in both] == [expected("a", 1), expected("bb", 1)]
    # The per-call async channel keeps the sync client's settings (here the token).
    assert servicer.metadata["Search"]["authorization"] == "Bearer s3cret"


def test_langchain_async_with_given_async_client(served: tuple[str, FakeRetrieval]) -> None:
    async def main() -> tuple[list[Any], list[dict[str, Any]]]:
        async with RecordingAsyncClient(served[0], timeout=5) as aclient:
            with Client(served[0]) as client:
                retriever = lc.BertdotRetriever(client=client, async_client=aclient, k=2, ef=9)
                docs = await retriever.ainvoke("hey", k=3)
            return docs, aclient.seen

    docs, seen = asyncio.run(main())
    assert lc_rows(docs) == expected("hey", 3)
    assert seen == [{"k": 3, "ef": 9, "return_text": True, "timeout": None}]


def test_langchain_errors_are_typed(served: tuple[str, FakeRetrieval]) -> None:
    retriever = lc.BertdotRetriever(target=served[0], timeout=5)
    try:
        with pytest.raises(InvalidArgument, match="empty query"):
            retriever.invoke("")
        with pytest.raises(InvalidArgument, match="empty query"):
            asyncio.run(retriever.ainvoke(""))
    finally:
        retriever.close()


def test_langchain_needs_exactly_one_of_target_and_client() -> None:
    with pytest.raises(ValueError, match="either target or client"):
        lc.BertdotRetriever()
    with Client("127.0.0.1:1") as client:
        with pytest.raises(ValueError, match="either target or client"):
            lc.BertdotRetriever(target="127.0.0.1:1", client=client)
        with pytest.raises(ValueError, match="token"):
            lc.BertdotRetriever(client=client, token="t")
    with pytest.raises(ValueError):
        lc.BertdotRetriever(target="127.0.0.1:1", k=0)


# ------------------------------------------------------------ LlamaIndex ----


def li_rows(nodes: list[Any]) -> list[tuple[str, float, str, str]]:
    rows = []
    for n in nodes:
        assert isinstance(n, li.NodeWithScore)
        assert isinstance(n.node, li.TextNode)
        rows.append((n.node.node_id, n.score, n.node.metadata["title"], n.node.text))
    return rows


def test_llamaindex_sync_nodes_in_order(served: tuple[str, FakeRetrieval]) -> None:
    target, servicer = served
    retriever = li.BertdotRetriever(target, k=3, token="s3cret", timeout=5)
    try:
        assert li_rows(retriever.retrieve("hello")) == expected("hello", 3)
        assert li_rows(retriever.retrieve(li.QueryBundle("hi"))) == expected("hi", 3)
    finally:
        retriever.close()
    assert servicer.metadata["Search"]["authorization"] == "Bearer s3cret"


def test_llamaindex_passes_k_ef_timeout(served: tuple[str, FakeRetrieval]) -> None:
    with RecordingClient(served[0], timeout=5) as client:
        retriever = li.BertdotRetriever(client=client, k=7, ef=33, timeout=2)
        assert len(retriever.retrieve("query")) == 7
        retriever.close()
        assert client.search("still open").hits
    assert client.seen[0] == {"k": 7, "ef": 33, "return_text": True, "timeout": 2}


def test_llamaindex_async_is_native(served: tuple[str, FakeRetrieval]) -> None:
    with SyncForbidden(served[0], timeout=5) as client:
        retriever = li.BertdotRetriever(client=client, k=2)
        nodes = asyncio.run(retriever.aretrieve("hello"))
    assert li_rows(nodes) == expected("hello", 2)

    async def with_given() -> tuple[list[Any], list[dict[str, Any]]]:
        async with RecordingAsyncClient(served[0], timeout=5) as aclient:
            with Client(served[0]) as sync:
                retriever = li.BertdotRetriever(client=sync, async_client=aclient, k=3)
                return await retriever.aretrieve("hey"), aclient.seen

    nodes, seen = asyncio.run(with_given())
    assert li_rows(nodes) == expected("hey", 3)
    assert seen == [{"k": 3, "ef": None, "return_text": True, "timeout": None}]


def test_llamaindex_errors_are_typed(served: tuple[str, FakeRetrieval]) -> None:
    retriever = li.BertdotRetriever(served[0], timeout=5)
    try:
        with pytest.raises(InvalidArgument, match="empty query"):
            retriever.retrieve("")
        with pytest.raises(InvalidArgument, match="empty query"):
            asyncio.run(retriever.aretrieve(""))
    finally:
        retriever.close()


def test_llamaindex_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="either target or client"):
        li.BertdotRetriever()
    with pytest.raises(ValueError, match="k must be"):
        li.BertdotRetriever("127.0.0.1:1", k=0)


# ---------------------------------------------------------------- extras ----


def test_frameworks_are_optional() -> None:
    """bertdot.client never imports a framework; an adapter without one names its extra."""
    code = (
        "import sys, bertdot.client, bertdot.client.adapters\n"
        "loaded = [m for m in ('langchain_core', 'llama_index') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "sys.modules['langchain_core'] = None\n"
        "sys.modules['llama_index'] = None\n"
        "for name in ('langchain', 'llamaindex'):\n"
        "    try:\n"
        "        __import__(f'bertdot.client.adapters.{name}')\n"
        "    except ImportError as err:\n"
        "        print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "install the langchain extra: pip install 'bertdot[langchain]'",
        "install the llamaindex extra: pip install 'bertdot[llamaindex]'",
    ]
