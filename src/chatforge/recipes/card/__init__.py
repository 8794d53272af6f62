"""The report card of a recipe: every model measured on the same held-out sets (measure.py), each
figure with its standard error (stats.py), next to each stage's time, speed, memory and plots, the
provenance of the run and the decontamination check, written as report.html and report.md."""
