"""The command line: click lives here and nowhere else. Each command parses its options, calls the planner,
the measurer or the launcher, and prints; model errors become one sentence that names the options."""
