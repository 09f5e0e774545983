"""Reusable building blocks: one package per block, each with a contract and backends."""
