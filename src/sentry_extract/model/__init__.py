"""The model every layer shares, at the bottom: it imports nothing above it.

spec.py      what a stream is, as data: its shape, parent, keys and columns
windows.py   time windows, a crawl's coverage, the slices a gap is read in
modes.py     the five replication modes and what each does to a target's rows
"""
