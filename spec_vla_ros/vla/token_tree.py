"""A token tree as a parents list (parents first: parents[i] in -1..i-1, -1 = follows the prefix),
without the model stack: vla/session.py verifies trees with these, drafts/tree.py builds them, and
decoding/spec.py (read by every command before it parses its arguments) names their shapes."""


def check_tree(parents: list[int], count: int | None = None) -> None:
    """ValueError unless `parents` lists parents first: parents[i] in -1..i-1 (and `count` entries)."""
    if count is not None and len(parents) != count:
        raise ValueError(f"a token tree needs one parent per token: {len(parents)} parents for {count} tokens")
    for index, parent in enumerate(parents):
        if isinstance(parent, bool) or not isinstance(parent, int) or not -1 <= parent < index:
            raise ValueError(f"tree node {index} has parent {parent!r}; expected -1 (follows the prefix) or an "
                             f"earlier node (parents first)")


def tree_depths(parents: list[int]) -> list[int]:
    """Depth of each node: 0 for a node that follows the prefix (parent -1), parent's + 1 otherwise."""
    depths: list[int] = []
    for parent in parents:
        depths.append(0 if parent < 0 else depths[parent] + 1)
    return depths
