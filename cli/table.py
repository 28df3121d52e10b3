"""Plain-text tables: pure functions returning strings."""


def text_table(headers: list[str], rows: list[list[str]], right: set[str]) -> str:
    """Columns as wide as their widest cell; `right` names the right-aligned ones."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).rjust(width) if header in right else str(cell).ljust(width)
                 for header, cell, width in zip(headers, row, widths)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
