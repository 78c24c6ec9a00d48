"""LocalBackend: implements spec.Backend on top of the engine (filled in as the engine lands)."""
