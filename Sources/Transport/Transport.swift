// Transport layer: see design.md.
