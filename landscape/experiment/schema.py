"""The TOML schema checks of experiment configs and claims: a table's keys and their value types."""

from __future__ import annotations

from landscape.errors import LandscapeError

STR_LIST, INT_LIST, EPOCHS = "list of strings", "list of integers", "epoch list"


def is_a(value, kind) -> bool:
    """Whether `value` has the schema type `kind` (a Python type or one of the list kinds above).

    Args:
        value: a parsed TOML value.
        kind: a Python type or a list kind (STR_LIST, ...).

    Returns:
        True when it matches (a bool is never an int or float).
    """
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == STR_LIST:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == INT_LIST:
        return isinstance(value, list) and bool(value) and all(is_a(v, int) for v in value)
    if kind == EPOCHS:
        return isinstance(value, str) or (isinstance(value, list) and all(is_a(v, int) or isinstance(v, str)
                                                                          for v in value))
    return isinstance(value, kind)


def check(table, schema: dict, where: str, required: tuple[str, ...] = ()) -> dict:
    """`table` must be a dict whose keys are in `schema` (key → type) with values of that type.

    Args:
        table: the parsed table.
        schema: {key: type}.
        where: its location, for messages.
        required: keys that must be present.

    Returns:
        The table.

    Raises:
        LandscapeError: not a table, an unknown or missing key, or a value of the wrong type.
    """
    if not isinstance(table, dict):
        raise LandscapeError(f"{where} must be a table, got {table!r}")
    unknown = sorted(set(table) - set(schema))
    if unknown:
        raise LandscapeError(f"{where}: unknown key(s) {unknown}; known: {', '.join(schema)}")
    for key in required:
        if key not in table:
            raise LandscapeError(f"{where}: missing required key {key!r}")
    for key, value in table.items():
        kind = schema[key]
        if not is_a(value, kind):
            name = kind if isinstance(kind, str) else {str: "a string", int: "an integer", float: "a number",
                                                           bool: "true or false", dict: "a table"}[kind]
            raise LandscapeError(f"{where}.{key} must be {name}, got {value!r}")
    return table
