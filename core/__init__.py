"""What every other package of the project uses, and which imports nothing of the project.

* :mod:`core.lazy`: detectron2's LazyConfig (``LazyCall``, ``LazyConfig``, ``instantiate``, ``get_config``).
* :mod:`core.comm`: distributed helpers (ranks, gather, synchronize).
* :mod:`core.logger`: the run's logging set-up.
* :mod:`core.fileio`: atomic file writes.
* :mod:`core.device`: the one resolver of a device name (``"auto"``, ``"cpu"``, ``"cuda"``).
"""
