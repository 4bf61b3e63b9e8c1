"""Verification: backends that answer keys, matching, and the ownership test."""
