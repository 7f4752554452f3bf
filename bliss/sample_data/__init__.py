"""A small simulated SDSS field shipped with the package (see ``make_sample.py``)."""
