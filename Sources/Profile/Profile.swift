// Profile layer: see design.md.
