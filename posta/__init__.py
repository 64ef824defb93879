"""Posta: tasks with email inside, for one self-hosting team."""
