"""The end-to-end execution benchmark's parts: service processes, setup and checks."""
