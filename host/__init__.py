"""The Lattice host process: identity, control interface, component runtime."""
