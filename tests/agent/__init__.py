"""Tests of the edge agent."""
