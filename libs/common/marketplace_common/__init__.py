"""Shared service kit: errors, settings, logging, gRPC server and client, database."""
