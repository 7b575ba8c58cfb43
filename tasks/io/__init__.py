"""Readers and writers of raw data formats."""
