"""DIL core: the pure algorithms of dynamic interactive labeling.

Plain typed functions and a few stateful classes on NumPy arrays and torch modules. Nothing here imports
Prefect or MLflow; orchestration lives in ``flows``/``tasks`` and tracking in the shell around them.

Array convention throughout: a volume is an ``(X, Y, Z)`` ndarray indexed like ITK, ``array[i, j, k]`` is the
voxel with ITK index ``(i, j, k)``. A slice is named by an array axis (0, 1 or 2) and an index along it; the
clinical name of an axis (sagittal, coronal, axial) comes from :mod:`dil_core.planes`.
"""

__version__ = "0.1.0"
