"""Example WebAssembly components and their cached build (see README.md)."""
