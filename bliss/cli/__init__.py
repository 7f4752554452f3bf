"""The composition layer: the ``bliss`` command and one module per mode; the only config reader."""
