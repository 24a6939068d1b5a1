"""Markdown table of the tap's settings, generated from its config schema.

Run ``python -m tap_quickbooks_backfill.settings_doc`` to print it; the README contains a
copy that a test keeps equal to this output.
"""

from __future__ import annotations

import typing as t

from tap_quickbooks_backfill.tap import build_config_schema


def _type_name(schema: dict[str, t.Any]) -> str:
    types = schema.get("type", [])
    if isinstance(types, str):
        return types
    return next((name for name in types if name != "null"), "any")


def settings_table(schema: dict[str, t.Any] | None = None) -> str:
    """Render one Markdown row per setting: type, default, required, secret, meaning.

    Args:
        schema: A tap config JSON Schema; the tap's own by default.

    Returns:
        The table, ending with a newline.
    """
    schema = schema or build_config_schema()
    required = set(schema.get("required", []))
    lines = [
        "| setting | type | default | required | secret | description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, prop in schema["properties"].items():
        default = prop.get("default")
        lines.append(
            f"| `{name}` | {_type_name(prop)} | "
            f"{'' if default is None else f'`{default}`'} | "
            f"{'yes' if name in required else ''} | "
            f"{'yes' if prop.get('secret') else ''} | "
            f"{prop.get('description', '')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")  # noqa: T201
