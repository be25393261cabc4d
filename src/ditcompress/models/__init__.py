"""Model-family adapters (PixArt, Flux) behind one interface, chosen by name from a registry."""
