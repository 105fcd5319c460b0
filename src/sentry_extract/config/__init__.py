"""Configuration: connections and replications, parsed once into frozen dataclasses."""
