// Reconciler layer: see design.md.
