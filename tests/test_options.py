"""Typed reranker options and the one model-spec syntax (``KIND:MODEL?KEY=VALUE&...``) that
``winnow serve``, ``winnow eval`` / ``rerank`` system expressions and ``winnow score`` share."""

from __future__ import annotations

import re
import shutil

import httpx
import pytest

import winnow
from winnow.cli import main
from winnow.errors import ConfigError
from winnow.pipeline.spec import SpecOptions, parse_system, split_systems
from winnow.rerankers.loading import load_spec
from winnow.rerankers.options import declared, parse_text
from winnow.rerankers.registry import ModelRef, available_kinds, get_kind, parse_model_ref

LONG_QUERY = "lift drag wing flow boundary layer pressure heat transfer " * 4


# -- declarations ------------------------------------------------------------------------------


def test_every_kind_declares_typed_options_with_help():
    for kind in available_kinds():
        options = declared(get_kind(kind).options_class)
        assert {"max_tokens", "max_batch_size", "show_progress"} <= set(options), kind
        for info in options.values():
            assert info.help, f"{kind}.{info.name} has no help"
            assert info.type_name, f"{kind}.{info.name} has no type"


def test_unknown_option_lists_the_valid_ones(fresh_cache, tiny_bert):
    with pytest.raises(ConfigError) as info:
        winnow.load_reranker(tiny_bert, "cross-encoder", max_query_lenght=8)
    message = str(info.value)
    assert "unknown option 'max_query_lenght' for cross-encoder" in message
    assert "did you mean max_query_length?" in message
    assert (
        "options of cross-encoder: max_query_length, first_token_only, overlap, backend, "
        "calibration, guard, export_dir, threads, max_tokens" in message
    )


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("batch_size", "winnow calls it max_tokens (padded tokens per batch) or max_batch_size"),
        ("show_progress_bar", "winnow calls it show_progress"),
        ("max_seq_length", "winnow calls it max_length"),
    ],
)
def test_sentence_transformers_names_say_what_winnow_calls_them(fresh_cache, tiny_bert, key, hint):
    with pytest.raises(ConfigError, match=re.escape(hint)):
        winnow.load_reranker(tiny_bert, **{key: 8})


def test_option_of_the_wrong_type_is_refused(fresh_cache, tiny_bert):
    with pytest.raises(ConfigError, match=r"max_query_length must be an integer or none, got '8'"):
        winnow.load_reranker(tiny_bert, max_query_length="8")
    with pytest.raises(ConfigError, match="first_token_only must be true or false, got 1"):
        winnow.load_reranker(tiny_bert, first_token_only=1)


def test_text_values_are_typed_strictly():
    assert parse_text("64", int) == 64
    assert parse_text("0.5", float) == 0.5
    assert parse_text("none", int | None) is None
    for word, value in [("1", True), ("yes", True), ("True", True), ("0", False), ("no", False)]:
        assert parse_text(word, bool) is value
    for bad, tp in [("maybe", bool), ("2", bool), ("1.5", int), ("abc", float), ("none", int)]:
        with pytest.raises(ValueError):
            parse_text(bad, tp)
    assert parse_text("300", int | str) == 300 and parse_text("10m", int | str) == "10m"


# -- the spec syntax ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ref"),
    [
        ("org/model", ModelRef(None, "org/model")),
        ("cross-encoder:org/model", ModelRef("cross-encoder", "org/model")),
        (
            "llm:BAAI/bge-reranker-v2-gemma?template=bge-gemma&max_query_length=64",
            ModelRef(
                "llm-pointwise",
                "BAAI/bge-reranker-v2-gemma",
                (("template", "bge-gemma"), ("max_query_length", "64")),
            ),
        ),
        (  # an Ollama name has a ':' of its own
            "llm:qwen3:0.6b?backend=ollama",
            ModelRef("llm-pointwise", "qwen3:0.6b", (("backend", "ollama"),)),
        ),
        (
            "rerank:bi-encoder:/m/e5?query_prompt=query:%20&document_prompt=a%26b%2Cc",
            ModelRef(
                "bi-encoder", "/m/e5", (("query_prompt", "query: "), ("document_prompt", "a&b,c"))
            ),
        ),
    ],
)
def test_model_spec_parsing(spec, ref):
    assert parse_model_ref(spec) == ref


def test_an_existing_path_with_a_question_mark_is_a_model_folder(tmp_path):
    folder = tmp_path / "odd?name=1"
    folder.mkdir()
    assert parse_model_ref(str(folder)) == ModelRef(None, str(folder))
    assert parse_model_ref(f"cross-encoder:{folder}") == ModelRef("cross-encoder", str(folder))


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("org/m?template", "option 'template' is not KEY=VALUE"),
        ("org/m?a=1&&b=2", "option '' is not KEY=VALUE"),
        ("org/m?a=1&a=2", "gives option 'a' twice"),
        ("?a=1", "names no model"),
        ("/models/x?", "option '' is not KEY=VALUE"),
    ],
)
def test_malformed_spec_options_are_errors(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_model_ref(spec)


def test_spec_options_reach_the_reranker_typed(fresh_cache, tiny_bert):
    r = load_spec(f"cross-encoder:{tiny_bert}?max_query_length=4&first_token_only=no&max_length=64")
    assert r.options.max_query_length == 4 and r.options.first_token_only is False
    assert r.config.max_length == 64
    # the same reranker as the keyword arguments give (one cache entry)
    assert r is winnow.load_reranker(
        tiny_bert, "cross-encoder", max_length=64, max_query_length=4, first_token_only=False
    )


def test_spec_errors_name_the_option_and_list_the_kind_options(fresh_cache, tiny_llama, tiny_bert):
    with pytest.raises(ConfigError) as info:
        load_spec(f"llm:{tiny_llama}?max_query_length=abc")
    message = str(info.value)
    assert "max_query_length must be an integer or none, got 'abc'" in message
    assert "options of llm-pointwise: device, dtype, max_length, activation, backend, template" in (
        message
    )
    with pytest.raises(ConfigError, match="unknown option 'batch_size' for llm-pointwise; winnow"):
        load_spec(f"llm:{tiny_llama}?batch_size=8")
    # the kind is inferred from the model when the spec names none; its options are then checked
    with pytest.raises(ConfigError, match="unknown option 'window' for cross-encoder"):
        load_spec(f"{tiny_bert}?window=3")


def test_template_reaches_llm_pointwise_from_a_spec(fresh_cache, tiny_llama):
    """The defect: 'llm-pointwise:...bge-reranker-v2-gemma' was scored with the Qwen3 prompt
    because no spec could pass a template. Now a spec can, and the known checkpoint picks its own."""
    given = load_spec(f"llm-pointwise:{tiny_llama}?template=bge-gemma&max_query_length=16")
    assert given.options.template == "bge-gemma" and given.options.max_query_length == 16
    assert given.template.prefix == "A:" and given.template.false_token is None
    default = load_spec(f"llm-pointwise:{tiny_llama}")
    default.load()
    assert default.template.prefix.startswith("<|im_start|>system")  # qwen3: no chat template


def test_known_reranker_checkpoints_pick_their_template_by_name(fresh_cache, tiny_llama, tmp_path):
    gemma = tmp_path / "bge-reranker-v2-gemma"
    shutil.copytree(tiny_llama, gemma)
    r = load_spec(f"llm-pointwise:{gemma}")
    assert r.template.prefix == "A:" and r.num_labels == 1  # logit("Yes") alone, as the card
    scores = r.score_pairs([("lift", "the wing makes lift")])
    assert scores.shape == (1,)


def test_system_expressions_carry_model_options(fresh_cache, tiny_bert, tiny_llama):
    o = SpecOptions(device="cpu")
    stage = parse_system(f"bm25 % 50 >> cross-encoder:{tiny_bert}?max_query_length=4", o)
    reranker = stage.stages[-1].reranker
    assert reranker.options.max_query_length == 4
    # quotes keep spaces (and ? % | inside values) in one word
    spec = f"bm25 >> 'llm:{tiny_llama}?template=bge-gemma&instruction=Is it about wings (yes/no)?'"
    reranker = parse_system(spec, o).stages[-1].reranker
    assert reranker.options.instruction == "Is it about wings (yes/no)?"
    assert reranker.template.suffix.endswith("Is it about wings (yes/no)?")
    # "%" right after options could be a cut or a percent escape: refused, not guessed
    with pytest.raises(ConfigError, match="is ambiguous; put a space before a cut"):
        parse_system(f"bm25 >> bi-encoder:{tiny_llama}?query_prompt=query:%20", o)
    stage = parse_system(f"bm25 >> cross-encoder:{tiny_bert}?max_query_length=4 % 10", o)
    assert stage.stages[-1].k == 10
    with pytest.raises(ConfigError, match="unknown option 'windo' for llm-listwise; did you mean"):
        parse_system(f"bm25 >> llm-listwise:{tiny_llama}?windo=4", o)


def test_commas_inside_quotes_do_not_split_systems():
    systems = "bm25,bm25 >> 'llm:m?instruction=Is it, or is it not, relevant?',(bm25|dense)>>rrf"
    assert split_systems(systems) == [
        "bm25",
        "bm25 >> 'llm:m?instruction=Is it, or is it not, relevant?'",
        "(bm25|dense)>>rrf",
    ]


def test_dense_stage_options_are_refused_clearly():
    # a dense stage takes its backend's options only (rerankers/backends)
    with pytest.raises(
        ConfigError, match="unknown option 'query_prompt'; a dense stage takes backend"
    ):
        parse_system("dense:org/m?query_prompt=x")


def test_a_custom_loader_gets_the_spec_options():
    seen = []

    def loader(model, kind, **options):
        seen.append((model, kind, options))
        raise ConfigError("stop here")

    with pytest.raises(ConfigError, match="stop here"):
        parse_system("bm25 >> llm:org/m?template=bge-gemma", SpecOptions(loader=loader))
    assert seen == [("org/m", "llm-pointwise", {"template": "bge-gemma"})]


# -- the commands ------------------------------------------------------------------------------


def test_winnow_score_takes_a_spec(fresh_cache, tiny_bert, capsys):
    args = ["score", "--json", "--device", "cpu", "--model"]
    docs = ["the wing makes lift", "bread"]
    assert main([*args, f"cross-encoder:{tiny_bert}?max_query_length=4", LONG_QUERY, *docs]) == 0
    short = {h["index"]: h["num_tokens"] for h in _json(capsys)}
    assert main([*args, f"cross-encoder:{tiny_bert}", LONG_QUERY, *docs]) == 0
    full = {h["index"]: h["num_tokens"] for h in _json(capsys)}
    assert all(short[i] < full[i] for i in full)  # the query was cut to 4 tokens
    assert main([*args, f"{tiny_bert}?batch_size=8", "q", "d"]) == 2
    err = capsys.readouterr().err
    assert "unknown option 'batch_size' for cross-encoder; winnow calls it max_tokens" in err


def _json(capsys):
    import json

    return json.loads(capsys.readouterr().out)


def test_served_model_uses_its_spec_options(fresh_cache, tiny_bert):
    pytest.importorskip("fastapi")
    from winnow.server.config import ModelSpec, ServerConfig
    from winnow.server.testing import running_server

    config = ServerConfig(
        models=(
            ModelSpec.parse(f"short=cross-encoder:{tiny_bert}?max_query_length=4"),
            ModelSpec.parse(f"full=cross-encoder:{tiny_bert}"),
        )
    )
    body = {"query": LONG_QUERY, "documents": ["the wing makes lift"], "return_token_info": True}
    with running_server(config) as srv:
        tokens = {}
        for name in ("short", "full"):
            r = httpx.post(srv.url + "/v1/rerank", json={**body, "model": name}, timeout=60)
            assert r.status_code == 200, r.text
            tokens[name] = r.json()["results"][0]["num_tokens"]
    assert tokens["short"] < tokens["full"]


def test_served_model_spec_options_are_checked_at_start():
    pytest.importorskip("fastapi")
    from winnow.server.config import ModelSpec

    with pytest.raises(ConfigError, match=r"model spec 'a=cross-encoder:/m\?windw=3'.*unknown"):
        ModelSpec.parse("a=cross-encoder:/m?windw=3")
    with pytest.raises(ConfigError, match="max_query_length must be an integer"):
        ModelSpec.parse("a=cross-encoder:/m?max_query_length=lots")
    with pytest.raises(ConfigError, match="no reranker kind has an option 'windw'"):
        ModelSpec.parse("a=/m?windw=3")
    spec = ModelSpec.parse(
        "a=/m?window=3"
    )  # some kind has it: checked again once the kind is known
    assert spec.options == (("window", "3"),) and spec.kind is None


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("top_k", "an argument of rank() / rank_many(), not of load_reranker()"),
        ("convert_to_tensor", "scores are always a float32 numpy array"),
    ],
)
def test_rank_arguments_given_to_the_loader_say_where_they_belong(tiny_bert, key, hint):
    with pytest.raises(ConfigError) as err:
        winnow.load_reranker(tiny_bert, **{key: 1})
    assert hint in str(err.value)


def test_did_you_mean_ends_the_sentence_once(tiny_bert):
    with pytest.raises(ConfigError) as err:
        winnow.load_reranker(tiny_bert, show_progres=True)
    assert "did you mean show_progress? Valid options" in str(err.value)
