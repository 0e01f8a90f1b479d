// Session layer: see design.md.
