"""jaxcalc's research experiments: one module per study, each with ``run(config) -> dict``.

Run them with ``jaxcalc run NAME`` or ``python experiments/NAME.py``; see ``jaxcalc list``.
"""
