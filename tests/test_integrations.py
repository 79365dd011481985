"""LangChain, LlamaIndex and ranx integrations against the real packages (no network), and the
errors naming the pip command when a package is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

import winnow
from winnow.errors import ConfigError, InputError

DOCS = [
    "the wing of the aircraft makes lift",
    "heat transfer in a boundary layer",
    "supersonic flow over a cone",
    "lift and drag of a thin wing",
]
QUERY = "lift of a wing"


@pytest.fixture
def reranker(tiny_bert):
    return winnow.load_reranker(tiny_bert)


def expected_order(reranker, k=None):
    return [(h.index, h.score) for h in reranker.rank(QUERY, DOCS, top_k=k)]


# -- LangChain --------------------------------------------------------------------------------
def test_langchain_compressor_reranks_keeping_ids_and_metadata(reranker):
    from langchain_core.documents import Document

    from winnow.integrations.langchain import WinnowRerank

    docs = [Document(page_content=t, metadata={"n": i}, id=f"doc{i}") for i, t in enumerate(DOCS)]
    out = WinnowRerank(reranker=reranker, top_k=2).compress_documents(docs, QUERY)
    want = expected_order(reranker, 2)
    assert [d.id for d in out] == [f"doc{i}" for i, _ in want]
    assert [d.metadata["n"] for d in out] == [i for i, _ in want]
    assert [d.metadata["relevance_score"] for d in out] == [s for _, s in want]
    assert [d.page_content for d in out] == [DOCS[i] for i, _ in want]
    assert "relevance_score" not in docs[0].metadata  # the inputs are not modified


def test_langchain_compressor_loads_a_model_name_and_runs_async(tiny_bert):
    import asyncio

    from langchain_core.documents import Document

    from winnow.integrations.langchain import WinnowRerank

    compressor = WinnowRerank(reranker=tiny_bert, top_k=None, score_key="score")
    assert compressor.reranker is winnow.load_reranker(tiny_bert)
    docs = [Document(page_content=t) for t in DOCS]
    out = asyncio.run(compressor.acompress_documents(docs, QUERY))
    assert [d.metadata["score"] for d in out] == [s for _, s in expected_order(compressor.reranker)]


def test_langchain_compressor_errors():
    from winnow.integrations.langchain import WinnowRerank

    with pytest.raises(ConfigError, match="reranker must be a winnow Reranker or a model name"):
        WinnowRerank(reranker=42)


def test_langchain_compressor_names_a_bad_document(reranker):
    from winnow.integrations.langchain import WinnowRerank

    with pytest.raises(InputError, match=r"documents\[1\] is str"):
        WinnowRerank(reranker=reranker).compress_documents([_lc_doc("a"), "b"], QUERY)


def _lc_doc(text):
    from langchain_core.documents import Document

    return Document(page_content=text)


# -- LlamaIndex -------------------------------------------------------------------------------
def test_llama_index_postprocessor_reranks_nodes(reranker):
    from llama_index.core.schema import NodeWithScore, TextNode

    from winnow.integrations.llama_index import WinnowRerank

    nodes = [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata={"n": i}), score=0.0)
        for i, t in enumerate(DOCS)
    ]
    post = WinnowRerank(reranker, top_k=3)
    out = post.postprocess_nodes(nodes, query_str=QUERY)
    # LlamaIndex's own rerankers score the text with the metadata (MetadataMode.EMBED)
    from llama_index.core.schema import MetadataMode

    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    want = reranker.rank(QUERY, texts, top_k=3)
    assert [n.node.node_id for n in out] == [f"n{h.index}" for h in want]
    assert [n.score for n in out] == [h.score for h in want]
    assert [n.node.metadata for n in out] == [{"n": h.index} for h in want]
    assert all(n.score == 0.0 for n in nodes)  # the inputs are not modified
    assert post.model == reranker.config.model


def test_llama_index_postprocessor_needs_a_query(reranker):
    from llama_index.core.schema import NodeWithScore, TextNode

    from winnow.integrations.llama_index import WinnowRerank

    with pytest.raises(InputError, match="needs a query"):
        WinnowRerank(reranker).postprocess_nodes([NodeWithScore(node=TextNode(text="a"))])


# -- ranx -------------------------------------------------------------------------------------
RUN = {"q1": {"d1": 2.0, "d2": 1.0, "d3": 0.5}, "q2": {"d3": 1.0, "d1": 0.25}}
QRELS = {"q1": {"d2": 1, "d3": 2}, "q2": {"d3": 1}}


def test_ranx_round_trip_and_evaluation_match_winnow():
    import ranx

    from winnow.evaluation.metrics import evaluate
    from winnow.integrations.ranx import from_ranx_qrels, from_ranx_run, to_ranx_qrels, to_ranx_run

    run, qrels = to_ranx_run(RUN, name="bm25"), to_ranx_qrels(QRELS)
    assert isinstance(run, ranx.Run) and run.name == "bm25"
    assert from_ranx_run(run) == RUN
    assert from_ranx_qrels(qrels) == QRELS
    ours = evaluate(RUN, QRELS, ["nDCG@3"])
    theirs = ranx.evaluate(qrels, run, "ndcg@3")
    assert ours["nDCG@3"] == pytest.approx(theirs, abs=1e-6)


def test_ranx_fusion_result_comes_back_as_a_winnow_run():
    import ranx

    from winnow.fusion.rrf import rrf
    from winnow.integrations.ranx import from_ranx_run, to_ranx_run

    other = {"q1": {"d3": 3.0, "d1": 1.0}, "q2": {"d1": 2.0}}
    fused = ranx.fuse([to_ranx_run(RUN), to_ranx_run(other)], method="rrf", params={"k": 60})
    ours = rrf([RUN, other], k=60)
    theirs = from_ranx_run(fused)
    assert theirs.keys() == ours.keys()
    for qid in ours:
        assert theirs[qid] == pytest.approx(ours[qid])


def test_ranx_conversion_names_bad_values():
    from winnow.integrations.ranx import from_ranx_run, to_ranx_qrels, to_ranx_run

    with pytest.raises(InputError, match=r"run\['q1'\]\['d1'\] is 'x'"):
        to_ranx_run({"q1": {"d1": "x"}})
    with pytest.raises(InputError, match=r"qrels\['q1'\]\['d1'\] is 0.5, expected an integer"):
        to_ranx_qrels({"q1": {"d1": 0.5}})
    with pytest.raises(InputError, match=r"expected a ranx\.Run"):
        from_ranx_run(RUN)


# -- missing extras ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("module", "package", "extra"),
    [
        ("langchain", "langchain_core", "langchain"),
        ("llama_index", "llama_index", "llama-index"),
        ("ranx", "ranx", "ranx"),
        ("mcp", "mcp", "mcp"),
        ("pyterrier", "pyterrier", "pyterrier"),
        ("ir_datasets", "ir_datasets", "ir-datasets"),
    ],
)
def test_missing_package_names_the_pip_command(module, package, extra):
    # sys.modules[name] = None makes `import name` raise ImportError, as when it is not installed
    code = (
        f"import sys; sys.modules[{package!r}] = None\n"
        "from winnow.errors import MissingExtraError\n"
        "try:\n"
        f"    import winnow.integrations.{module}\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"pip install 'winnow[{extra}]'" in out.stdout


def test_import_winnow_imports_no_integration_package():
    heavy = ["torch", "numpy", "langchain_core", "llama_index", "mcp", "ranx", "pyterrier"]
    code = f"import sys, winnow; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
