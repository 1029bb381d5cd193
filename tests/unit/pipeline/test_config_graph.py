from __future__ import annotations

import textwrap

import pytest

from reidaug.errors import ConfigError, GraphError, UnknownNameError
from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.graph import build_graph
from reidaug.stages import STAGES, get_stage

GOOD = """\
name: t
stages:
  selftest-source:
    params: {num_items: 100, chunk_size: 10}
  selftest-map:
    params: {scale: 2.0}
  selftest-reduce: {}
"""


def graph_of(text: str, overrides=None):
    loaded = load_pipeline("p.yaml", text=textwrap.dedent(text), overrides=overrides)
    return build_graph(loaded, STAGES)


def error_of(text: str, overrides=None, exc=ConfigError) -> str:
    with pytest.raises(exc) as info:
        graph_of(text, overrides)
    return str(info.value)


def test_good_pipeline_orders_and_keys_stages():
    g = graph_of(GOOD)
    assert list(g.nodes) == ["selftest-source", "selftest-map", "selftest-reduce"]
    assert all(len(k) == 64 for k in g.keys.values())


def test_golden_pipeline_keys():
    # Literal keys of the self-test pipeline: a change here invalidates users' caches.
    assert dict(graph_of(GOOD).keys) == GOLDEN


GOLDEN = {
    "selftest-source": "0fd2d3849a5e270c66e3d52cfe106508b3197d9ac2b01c06036b28f5ff7e6a4b",
    "selftest-map": "cebe3d581afe2075c58699c27d3e9af442c651e0cae7f42a1ab36e8775aa3ebe",
    "selftest-reduce": "48246a518f63daa1ff0a29b3ac2a2a5a0ba5d37a073dedf6adfb0309844c3692",
}


def test_yaml_order_does_not_matter_for_keys():
    shuffled = """\
    name: t
    stages:
      selftest-reduce: {}
      selftest-map:
        params: {scale: 2.0}
      selftest-source:
        params: {chunk_size: 10, num_items: 100}
    """
    assert graph_of(shuffled).keys == graph_of(GOOD).keys
    assert list(graph_of(shuffled).nodes) == ["selftest-source", "selftest-map", "selftest-reduce"]


def test_nonsemantic_param_keeps_key_and_semantic_param_changes_downstream():
    base = graph_of(GOOD).keys
    slow = graph_of(GOOD, ["stages.selftest-map.params.sleep_ms=5"]).keys
    assert slow == base
    changed = graph_of(GOOD, ["stages.selftest-source.params.num_items=101"]).keys
    assert all(changed[n] != base[n] for n in base)  # propagates to every downstream key
    mapped = graph_of(GOOD, ["stages.selftest-map.params.scale=3"]).keys
    assert mapped["selftest-source"] == base["selftest-source"]
    assert mapped["selftest-map"] != base["selftest-map"]


# what each mistake's message must hold: (pipeline YAML, error class, substrings)
MISTAKES = {
    "unknown_param_key_names_file_line_column_suggests_and_shows_the_line": (
        "name: t\nstages:\n  selftest-source:\n    params: {num_itmes: 100}\n", ConfigError,
        ["p.yaml:4:", "stages.selftest-source.params.num_itmes", 'Did you mean "num_items"',
         "params: {num_itmes: 100}"]),
    "wrong_type_says_expected_and_found": (
        "name: t\nstages:\n  selftest-source:\n    params:\n      num_items: lots\n", ConfigError,
        ["p.yaml:5:", "num_items", "integer", "'lots'"]),
    "unknown_top_level_key_suggests": ("name: t\nstagse: {}\n", ConfigError, ["p.yaml:2:1", 'Did you mean "stages"']),
    "duplicate_key_is_an_error_not_silently_overwritten": (
        "name: t\nstages:\n  selftest-source: {}\n  selftest-source: {}\n", ConfigError,
        ["duplicate key", "p.yaml:4:", "line 3"]),
    "invalid_yaml_points_at_the_line": ("name: t\nstages:\n  a: [1, 2\n", ConfigError, ["invalid YAML", "p.yaml:"]),
    "unknown_stage_kind_suggests_and_lists": (
        "name: t\nstages:\n  selftest-sourse: {}\n", ConfigError,
        ['Did you mean "selftest-source"', "Known stages:", "p.yaml:3:"]),
    "missing_upstream_stage_is_a_graph_error": (
        "name: t\nstages:\n  selftest-map: {}\n", GraphError,
        ["selftest-source.chunks", "no stage 'selftest-source'"]),
    "input_to_unknown_output_is_a_graph_error": (
        "name: t\nstages:\n  selftest-source: {}\n  selftest-map:\n    inputs: {source: selftest-source.chunkz}\n",
        GraphError, ["no output 'chunkz'", 'Did you mean "chunks"', "p.yaml:5:"]),
}


@pytest.mark.parametrize("text, exc, expected", MISTAKES.values(), ids=MISTAKES.keys())
def test_mistakes_are_located_and_explained(text, exc, expected):
    msg = error_of(text, exc=exc)
    assert [e for e in expected if e not in msg] == [], msg


def test_cycle_is_reported_with_its_path():
    msg = error_of("""\
    name: t
    stages:
      a:
        uses: selftest-map
        inputs: {source: b.chunks}
      b:
        uses: selftest-map
        inputs: {source: a.chunks}
    """, exc=GraphError)
    assert "cycle" in msg and ("a -> b -> a" in msg or "b -> a -> b" in msg)
    # the line of the binding that closes it, with the snippet
    assert ":8:" in msg and "inputs: {source: a.chunks}" in msg and "binds b.inputs.source to a" in msg


def test_set_override_errors_name_the_override():
    msg = error_of(GOOD, ["stages.selftest-map.params.scale=notanumber"])
    assert "--set stages.selftest-map.params.scale=notanumber" in msg
    msg = error_of(GOOD, ["stages.selftest-mop.params.scale=1"])
    assert 'Did you mean "selftest-map"' in msg


def test_registry_lookup_lists_known_names():
    with pytest.raises(UnknownNameError) as info:
        get_stage("selftest-mapp")
    assert 'Did you mean "selftest-map"' in str(info.value) and "selftest-reduce" in str(info.value)


def test_two_instances_of_one_stage_kind():
    g = graph_of("""\
    name: t
    stages:
      selftest-source: {}
      map-a: {uses: selftest-map, params: {scale: 1.0}}
      map-b: {uses: selftest-map, params: {scale: 2.0}}
    """)
    assert g.keys["map-a"] != g.keys["map-b"]


def test_file_param_is_keyed_by_content_and_checked_for_existence(tmp_path):
    import dataclasses

    from reidaug.pipeline.stage import FileParam, Params
    from reidaug.stages import selftest

    class WithFile(Params):
        checkpoint: FileParam

    spec = dataclasses.replace(selftest.SOURCE, name="with-file", params=WithFile, nonsemantic=frozenset(),
                               fingerprint=None)
    registry = {"with-file": spec}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.pth").write_bytes(b"weights-1")

    def key(rel: str) -> str:
        text = f"name: t\nstages:\n  with-file:\n    params: {{checkpoint: {rel}}}\n"
        (tmp_path / "p.yaml").write_text(text)
        return build_graph(load_pipeline(tmp_path / "p.yaml"), registry).keys["with-file"]

    k1 = key("a/w.pth")
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "w.pth").rename(tmp_path / "b" / "moved.pth")
    assert key("b/moved.pth") == k1  # moved: same content, same key
    (tmp_path / "b" / "moved.pth").write_bytes(b"weights-2")
    assert key("b/moved.pth") != k1  # one byte changed: new key
    with pytest.raises(ConfigError, match=r"p.yaml:4:.*checkpoint.*does not exist"):
        key("missing.pth")


def test_empty_values_mean_defaults_and_bad_yaml_constructs_are_located():
    g = graph_of("name: t\nstages:\n  selftest-source:\n    params:\n  selftest-map:\n  selftest-reduce:\n")
    assert list(g.nodes) == ["selftest-source", "selftest-map", "selftest-reduce"]
    assert "p.yaml:1:7" in error_of("name: !foo t\nstages:\n  selftest-source: {}\n")
    assert "merge keys" in error_of("b: &b {x: 1}\nname: t\nstages:\n  selftest-source:\n    <<: *b\n")


def test_stage_names_must_be_kebab_case():
    msg = error_of("name: t\nstages:\n  Src_1: {uses: selftest-source}\n")
    assert "p.yaml:3:3" in msg and "kebab-case" in msg
    assert "kebab-case" in error_of('name: t\nstages:\n  "../../evil": {uses: selftest-source}\n')
