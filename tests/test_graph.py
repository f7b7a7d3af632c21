"""Graph validation: a pipeline description is checked before anything runs (no event loop)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from asyncpipe import BaseHandler, GraphError, HandlerNode, PipelineExecutor


def passthrough(message: Any) -> Any:
    return message


def cycle_rotations(*names: str) -> list[str]:
    """Every way of writing the cycle names[0] -> names[1] -> ... -> names[0]."""
    rotations = []
    for i in range(len(names)):
        turn = [*names[i:], *names[:i]]
        rotations.append(" -> ".join([*turn, turn[0]]))
    return rotations


# -- names and dependencies ----------------------------------------------------------------


def test_duplicate_node_names_raise_graph_error_naming_the_node() -> None:
    src = HandlerNode("src", [1])
    first = HandlerNode("twin", passthrough, [src])
    second = HandlerNode("twin", passthrough, [src])
    with pytest.raises(GraphError, match="'twin'") as info:
        PipelineExecutor([src], [first, second])
    assert info.value.nodes == ("twin",)


def test_dependency_on_a_node_not_in_the_pipeline_raises_graph_error() -> None:
    src = HandlerNode("src", [1])
    stray = HandlerNode("stray", [1])
    node = HandlerNode("node", passthrough, [stray])
    with pytest.raises(GraphError, match="'node'.*'stray'") as info:
        PipelineExecutor([src], [node])
    assert info.value.nodes == ("node", "stray")


def test_dependency_on_an_unknown_name_raises_graph_error() -> None:
    src = HandlerNode("src", [1])
    node = HandlerNode("node", passthrough, ["nowhere"])
    with pytest.raises(GraphError, match="'node'.*'nowhere'") as info:
        PipelineExecutor([src], [node])
    assert info.value.nodes == ("node", "nowhere")


def test_dependency_on_a_different_node_object_with_a_known_name_raises_graph_error() -> None:
    src = HandlerNode("src", [1])
    impostor = HandlerNode("src", [2])
    node = HandlerNode("node", passthrough, [impostor])
    with pytest.raises(GraphError, match="'node'.*'src'") as info:
        PipelineExecutor([src], [node])
    assert info.value.nodes == ("node", "src")


def test_dependency_by_name_is_resolved() -> None:
    src = HandlerNode("src", [1])
    node = HandlerNode("node", passthrough, ["src"])
    executor = PipelineExecutor([src], [node])
    assert executor.graph.inputs["node"] == ["src"]


def test_empty_pipeline_raises_graph_error() -> None:
    with pytest.raises(GraphError):
        PipelineExecutor([], [])


# -- cycles --------------------------------------------------------------------------------


def test_cycle_raises_graph_error_with_the_cycle_spelled_out() -> None:
    a = HandlerNode("a", passthrough, ["c"])
    b = HandlerNode("b", passthrough, [a])
    c = HandlerNode("c", passthrough, [b])
    with pytest.raises(GraphError) as info:
        PipelineExecutor([], [a, b, c])
    message = str(info.value)
    assert message.startswith("cycle: ")
    assert any(rotation in message for rotation in cycle_rotations("a", "b", "c")), message
    assert sorted(info.value.nodes) == ["a", "b", "c"]


def test_cycle_fed_by_a_source_is_reported_without_the_source() -> None:
    src = HandlerNode("src", [1])
    a = HandlerNode("a", passthrough, [src, "c"])
    b = HandlerNode("b", passthrough, [a])
    c = HandlerNode("c", passthrough, [b])
    sink = HandlerNode("sink", passthrough, [c])
    with pytest.raises(GraphError) as info:
        PipelineExecutor([src], [sink, a, b, c])
    message = str(info.value)
    assert any(rotation in message for rotation in cycle_rotations("a", "b", "c")), message
    assert "src" not in message
    assert sorted(info.value.nodes) == ["a", "b", "c"]


def test_node_depending_on_itself_is_a_cycle() -> None:
    src = HandlerNode("src", [1])
    loop = HandlerNode("loop", passthrough, [src, "loop"])
    with pytest.raises(GraphError, match="loop -> loop") as info:
        PipelineExecutor([src], [loop])
    assert info.value.nodes == ("loop",)


# -- producers, consumers, sources ---------------------------------------------------------


def test_consumer_without_dependencies_raises_graph_error() -> None:
    src = HandlerNode("src", [1])
    lonely = HandlerNode("lonely", passthrough)
    with pytest.raises(GraphError, match="'lonely'") as info:
        PipelineExecutor([src], [lonely])
    assert info.value.nodes == ("lonely",)


def test_producer_with_dependencies_raises_graph_error() -> None:
    src = HandlerNode("src", [1])
    misplaced = HandlerNode("misplaced", passthrough, [src])
    with pytest.raises(GraphError, match="'misplaced'") as info:
        PipelineExecutor([src, misplaced], [])
    assert info.value.nodes == ("misplaced",)


def test_source_with_dependencies_raises_graph_error_on_construction() -> None:
    src = HandlerNode("src", [1])
    with pytest.raises(GraphError, match="'second'") as info:
        HandlerNode("second", [2, 3], dependencies=[src])
    assert info.value.nodes == ("second",)


def test_source_listed_as_a_consumer_raises_graph_error() -> None:
    src = HandlerNode("src", [1])
    other = HandlerNode("other", [2])
    with pytest.raises(GraphError, match="'other'") as info:
        PipelineExecutor([src], [other])
    assert info.value.nodes == ("other",)


# -- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"workers": 0}, "workers"),
        ({"capacity": 0}, "capacity"),
        ({"chunks": 0}, "chunks"),
        ({"on_error": "bogus"}, "on_error"),
        ({"retries": -1}, "retries"),
    ],
)
def test_bad_option_value_raises_value_error_naming_the_node(
    options: dict[str, Any], option: str
) -> None:
    with pytest.raises(ValueError, match=f"'picky'.*{option}"):
        HandlerNode("picky", passthrough, ["src"], **options)


def test_empty_node_name_raises_value_error() -> None:
    with pytest.raises(ValueError, match="name"):
        HandlerNode("", passthrough)


def test_unpicklable_lambda_on_a_cpu_node_raises_type_error_naming_the_node() -> None:
    src = HandlerNode("src", [1])
    node = HandlerNode("crunch", lambda message: message, [src], cpu=True)  # builds fine
    with pytest.raises(TypeError, match="'crunch'"):
        PipelineExecutor([src], [node])


def test_instance_of_a_local_class_on_a_cpu_node_raises_type_error_naming_the_node() -> None:
    class Local:
        def __call__(self, message: Any) -> Any:
            return message

    src = HandlerNode("src", [1])
    node = HandlerNode("crunch", Local(), [src], cpu=True)
    with pytest.raises(TypeError, match="'crunch'"):
        PipelineExecutor([src], [node])


class Double(BaseHandler):
    def handle(self, message: Any) -> Any:
        return message * 2


class Triple:  # a handler by duck typing: a handle() method, no BaseHandler
    def handle(self, message: Any) -> Any:
        return message * 3


@pytest.mark.parametrize("handler", [Double, Triple])
def test_handler_class_instead_of_instance_raises_type_error_saying_pass_an_instance(
    handler: type,
) -> None:
    src = HandlerNode("src", [1])
    name = handler.__qualname__
    with pytest.raises(TypeError) as raised:
        HandlerNode("double", handler, [src])
    assert (
        str(raised.value) == f"node 'double': handler {name} is a class; pass an instance: {name}()"
    )


# -- Mermaid -------------------------------------------------------------------------------


def parse_mermaid(text: str) -> tuple[str, dict[str, tuple[str, str]], set[tuple[str, str]]]:
    """Split a flowchart into (header, {label: (id, shape)}, {(from label, to label)})."""
    lines = text.splitlines()
    node_line = re.compile(r"^\s+(n\d+)(\(\[|\[\(|\[\[|\[)\"([^\"]*)\"(\]\)|\)\]|\]\]|\])$")
    edge_line = re.compile(r"^\s+(n\d+) --> (n\d+)$")
    nodes: dict[str, tuple[str, str]] = {}
    edges_by_id: set[tuple[str, str]] = set()
    for line in lines[1:]:
        if match := node_line.match(line):
            node_id, opening, label, closing = match.groups()
            nodes[label.split("<br/>")[0]] = (node_id, opening + closing)
        elif match := edge_line.match(line):
            edges_by_id.add((match[1], match[2]))
        else:
            raise AssertionError(f"unexpected Mermaid line: {line!r}")
    label_of = {node_id: label for label, (node_id, _) in nodes.items()}
    edges = {(label_of[a], label_of[b]) for a, b in edges_by_id}
    return lines[0], nodes, edges


def test_to_mermaid_is_a_left_to_right_flowchart_with_every_edge() -> None:
    src = HandlerNode("src", [1])
    left = HandlerNode("left", passthrough, [src])
    right = HandlerNode("right", passthrough, [src])
    join = HandlerNode("join", passthrough, [left, right])
    header, nodes, edges = parse_mermaid(PipelineExecutor([src], [left, right, join]).to_mermaid())
    assert header == "flowchart LR"
    assert set(nodes) == {"src", "left", "right", "join"}
    assert edges == {("src", "left"), ("src", "right"), ("left", "join"), ("right", "join")}


def test_to_mermaid_draws_sources_as_stadiums_and_sinks_as_cylinders() -> None:
    src = HandlerNode("src", [1])
    middle = HandlerNode("middle", passthrough, [src])
    sink = HandlerNode("sink", passthrough, [middle])
    _, nodes, _ = parse_mermaid(PipelineExecutor([src], [middle, sink]).to_mermaid())
    assert nodes["src"][1] == "([])"
    assert nodes["middle"][1] == "[]"
    assert nodes["sink"][1] == "[()]"


def test_to_mermaid_draws_cpu_nodes_as_subroutines() -> None:
    src = HandlerNode("src", [1])
    crunch = HandlerNode("crunch", passthrough, [src], cpu=True)  # never run: no pool starts
    sink = HandlerNode("sink", passthrough, [crunch])
    text = PipelineExecutor([src], [crunch, sink]).to_mermaid()
    _, nodes, _ = parse_mermaid(text)
    assert nodes["crunch"][1] == "[[]]"
    assert "cpu" in text


def chunk_generator(chunk: list[int]) -> Any:
    yield chunk


async def chunk_async_generator(chunk: list[int]) -> Any:
    yield chunk


@pytest.mark.parametrize(
    "handler", [chunk_generator, chunk_async_generator], ids=["generator", "async-generator"]
)
async def test_parallel_with_a_generator_handler_is_refused_at_construction(
    handler: Any,
) -> None:
    source = HandlerNode("source", [[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="parallel=True"):
        HandlerNode("handler", handler, [source], parallel=True, chunks=2)
