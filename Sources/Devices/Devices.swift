// Devices layer: see design.md.
