"""Recipes: several stages run in order into one directory (`chatforge run`), and their report card."""
