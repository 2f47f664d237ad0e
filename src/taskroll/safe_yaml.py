"""Loading YAML files that other people may have written, with limits.

:func:`load_yaml` is :func:`yaml.safe_load` (plain data only, no Python objects)
plus limits checked while the document is composed, before any value is built:

* at most :data:`MAX_ALIASES` (100) aliases (``*name``) per document;
* no recursive alias (an alias inside the node it names), which would build a
  value that contains itself;
* at most :data:`MAX_NODES` (100,000) nodes once every alias is expanded, which
  stops "billion laughs" documents (nested aliases that multiply) in microseconds;
* at most :data:`MAX_DEPTH` (100) levels of nesting, aliases expanded.

A document over a limit, or one that is not valid YAML, raises
:class:`UnsafeYamlError` with a one-line message.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from taskroll.errors import TaskConfigError

__all__ = ["MAX_ALIASES", "MAX_DEPTH", "MAX_NODES", "UnsafeYamlError", "load_yaml"]

MAX_ALIASES = 100
MAX_NODES = 100_000
MAX_DEPTH = 100


class UnsafeYamlError(TaskConfigError):
    """A YAML document is malformed or exceeds a limit of :func:`load_yaml`."""


class _LimitedLoader(yaml.SafeLoader):
    """A safe loader that measures every node as it is composed (see the module doc)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_count = 0
        self.depth = 0
        #: id(node) -> (expanded size, expanded height), for every finished node.
        self.measures: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            self.alias_count += 1
            if self.alias_count > MAX_ALIASES:
                raise UnsafeYamlError(f"more than {MAX_ALIASES} aliases (*name)")
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self.measures:
                raise UnsafeYamlError(f"recursive alias *{event.anchor} (a value containing "
                                      "itself)")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise UnsafeYamlError(f"nested deeper than {MAX_DEPTH} levels")
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if node is not None and id(node) not in self.measures:
            self._measure(node)
        return node

    def _measure(self, node: Node) -> None:
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [item for pair in node.value for item in pair]
        else:
            children = []
        size, height = 1, 1
        for child in children:
            child_size, child_height = self.measures.get(id(child), (1, 1))
            size += child_size
            height = max(height, child_height + 1)
        if size > MAX_NODES:
            raise UnsafeYamlError(f"more than {MAX_NODES:,} values once aliases are expanded "
                                  "(nested aliases)")
        if height > MAX_DEPTH:
            raise UnsafeYamlError(f"nested deeper than {MAX_DEPTH} levels once aliases are "
                                  "expanded")
        self.measures[id(node)] = (size, height)


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """Parse one YAML document safely, within the limits of this module.

    Args:
        text: The YAML text.
        source: Name of the file, used in error messages.

    Returns:
        The plain data (dicts, lists, strings, numbers, dates, ``None``).

    Raises:
        UnsafeYamlError: When the text is not valid YAML or exceeds a limit.
    """
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_data()
    except UnsafeYamlError as error:
        raise UnsafeYamlError(f"{source}: refused YAML: {error}") from None
    except yaml.YAMLError as error:
        raise UnsafeYamlError(f"{source}: invalid YAML: {' '.join(str(error).split())}") from None
    except RecursionError:
        raise UnsafeYamlError(f"{source}: refused YAML: nested too deeply") from None
    finally:
        loader.dispose()
